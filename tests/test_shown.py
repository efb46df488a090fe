"""What is stored is what was shown (issue 27): every correction kind after every other kind on
the same reply, made through the page's real handlers (crowd/ui/chat.py) and the real service on
a real SQLite file and the tiny model. After each action, the stored correction's lesson
(crowd.lessons, what training and export read) holds exactly the texts the handlers returned for
display: the reply as the chat shows it, the conversation shown before it, and the two replies
the A/B panel shows. Bad input (a stale text, a pair not shown, one's own message) stores nothing.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import gradio as gr
import pytest

from crowd.config import ModelSettings
from crowd.lessons import lesson
from crowd.limits import Limits, Refused
from crowd.organizer import Organizer
from crowd.service import CrowdService
from crowd.serving.generation import GenerationService
from crowd.serving.protocol import BASE, Sampling
from crowd.ui.chat import ChatHandlers, ChatTab
from crowd.ui.session import SessionHandlers
from storage import queries
from storage.db import connect
from tests.apps import KEY

REWRITE = "A kinder reply, rewritten by hand."
ACTIONS = ("rewrite", "pick", "label", "thumbs", "undo")


class RecordingGeneration(GenerationService):
    """The real generation service, remembering each chat it was asked to answer."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked: list[list[dict]] = []

    def stream(
        self, chat: Sequence[dict], adapter: str = BASE, sampling: Sampling | None = None
    ) -> Iterator[str]:
        self.asked.append([dict(m) for m in chat])
        yield from super().stream(chat, adapter, sampling)


@pytest.fixture
def service(settings, loaded):
    generation = RecordingGeneration(loaded, ModelSettings(max_new_tokens=6, temperature=0.0))
    yield CrowdService(settings, generation, limits=Limits(chats_per_minute=100))
    generation.close()


@dataclass
class Page:
    """One volunteer's page, driven through the handlers, remembering what they displayed."""

    service: CrowdService
    handlers: ChatHandlers = field(init=False)
    token: str = field(init=False)
    tab: ChatTab = field(default_factory=ChatTab)
    rows: list[dict] = field(default_factory=list)  # the chat as last drawn
    pair_shown: tuple[str, str] | None = None  # (A, B) as the A/B panel last showed them

    def __post_init__(self):
        self.handlers = ChatHandlers(self.service)
        self.token = SessionHandlers(self.service).join("Ada", True)[0]

    def send(self, text: str) -> None:
        chat, self.tab, *_ = list(self.handlers.send(self.token, self.tab, text))[-1]
        self.rows = chat["value"]

    def target(self) -> int:
        return self.tab.last_reply()

    def shown_text(self) -> str:
        """The target reply's text in the chat as last drawn (its row, not its marker)."""
        return self.rows[self.tab.rows.index(self.target())]["content"]

    def conversation_before(self) -> list[dict]:
        """The chat shown above the target reply, "edited" markers left out."""
        index = self.tab.rows.index(self.target())
        return [
            {"role": r["role"], "content": r["content"]}
            for r in self.rows[:index]
            if not r.get("metadata")
        ]

    # the actions; each returns the correction it stored (None for undo)

    def rewrite(self, text: str = REWRITE) -> int:
        index = self.tab.rows.index(self.target())
        self.tab, *_ = self.handlers.open_editor(
            self.tab, gr.SelectData(None, {"index": index, "value": ""})
        )
        chat, self.tab, *rest = self.handlers.save_edit(self.token, self.tab, text)
        self.rows = chat["value"]
        if self.tab.pair is not None:  # the panel's reply A is redrawn with the rewrite
            self.pair_shown = self.pair_texts(rest[-1])
        return self.tab.last.correction_id

    def pick(self, choice: str = "a") -> int:
        self.tab, _, pair = list(self.handlers.another(self.token, self.tab))[-1]
        self.pair_shown = self.pair_texts(pair)
        asked = self.service.generation.asked[-1]  # type: ignore[union-attr]
        assert asked == self.conversation_before()  # B answers what A answered, as shown
        self.tab, *_ = self.handlers.chooser(choice)(self.token, self.tab)
        return self.tab.last.correction_id

    def label(self, emotion: str = "joy") -> int:
        self.tab, *_ = self.handlers.label(self.token, self.tab, emotion)
        return self.tab.last.correction_id

    def thumbs(self, liked: bool = True) -> int:
        index = self.tab.rows.index(self.target())
        like = gr.LikeData(None, {"index": index, "value": "", "liked": liked})
        chat, self.tab, *_ = self.handlers.like(self.token, self.tab, like)
        self.rows = chat["value"]
        return self.tab.last.correction_id

    def undo(self) -> None:
        chat, self.tab, *_ = self.handlers.undo(self.token, self.tab)
        self.rows = chat["value"]

    @staticmethod
    def pair_texts(pair_html: str) -> tuple[str, str]:
        """Reply A's and reply B's text as the A/B panel's HTML shows them."""
        texts = re.findall(r'<p class="crowd-ab-text">(.*?)</p>', pair_html, re.S)
        a, b = (html.unescape(t) for t in texts)
        return a, b


def stored(service: CrowdService, correction_id: int) -> dict:
    with connect(service.settings.db_path) as db:
        return queries.get_correction(db, correction_id)


def check(page: Page, correction_id: int) -> None:
    """The correction's lesson is about the texts the page displayed when it was made."""
    row = stored(page.service, correction_id)
    taught = lesson(row, "emotion", "joy")
    assert taught.prompt == page.conversation_before()
    if row["kind"] == "rewrite":
        assert taught.sft_target == page.shown_text()  # the chat now shows the rewrite
    elif row["kind"] == "choice":
        assert (row["shown"], row["other_reply"]) == page.pair_shown
        assert page.pair_shown[0] == page.shown_text()  # reply A is the chat's reply
        assert taught.pair == page.pair_shown or taught.sft_target == page.pair_shown[0]
    elif row["kind"] == "emotion":
        assert taught.emotion == (page.shown_text(), "joy")
    else:
        assert taught.kto == ((page.shown_text(), True),)


def act(page: Page, action: str) -> None:
    """One action on the target reply, checked against what the page shows."""
    if action == "undo":
        if page.tab.last is None:  # an undo needs something to withdraw: a rewrite first
            check(page, page.rewrite())
        undone = page.tab.last.correction_id
        page.undo()
        assert stored(page.service, undone)["undone_at"] is not None
        return
    check(page, getattr(page, action)())


def conversation(service: CrowdService) -> Page:
    """Two turns, the first reply rewritten: the target is the second reply."""
    page = Page(service)
    page.send("Hello")
    page.rewrite("Hi! So lovely to hear from you.")
    page.send("And then?")
    return page


@pytest.mark.parametrize("second", ACTIONS)
@pytest.mark.parametrize("first", ACTIONS)
def test_each_correction_after_each_other_is_stored_as_shown(service, first, second):
    page = conversation(service)
    assert service.generation.asked[-1] == page.conversation_before()  # the context shown
    act(page, first)
    act(page, second)
    for action in ("label", "thumbs", "pick"):  # and later ones are about the text now shown
        act(page, action)


@pytest.mark.parametrize("first", ACTIONS)
def test_after_the_round_ends_a_correction_is_refused_and_nothing_stored(service, first):
    page = conversation(service)
    act(page, first)
    before = count(service)
    Organizer(service).close_round(KEY)
    h, token, tab = page.handlers, page.token, page.tab
    h.open_editor(tab, gr.SelectData(None, {"index": tab.rows.index(page.target()), "value": ""}))
    like = gr.LikeData(None, {"index": tab.rows.index(page.target()), "value": "", "liked": False})
    for refused in (
        lambda: h.save_edit(token, tab, "Too late."),
        lambda: h.label(token, tab, "anger"),
        lambda: h.like(token, tab, like),
        lambda: list(h.another(token, tab)),
    ):
        with pytest.warns(UserWarning, match="round that has closed"):
            refused()
    assert count(service) == before


def count(service: CrowdService) -> int:
    with connect(service.settings.db_path) as db:
        return db.table("corrections").count


def test_a_pick_of_a_pair_not_shown_is_refused_and_stores_nothing(service):
    page = conversation(service)
    a, token = page.target(), page.token
    first_b = list(service.another(token, a))[-1].message_id
    page.pick()  # the page's pair: A and a newer B
    latest, (a_text, b_text) = queries_latest(service, a), page.pair_shown
    before = count(service)
    for message, call in [
        ("newer second reply", lambda: service.choose(token, a, first_b, "b")),
        ("changed since", lambda: service.choose(token, a, latest, "a", shown=("A?", b_text))),
        ("changed since", lambda: service.choose(token, a, latest, "a", shown=(a_text, "B?"))),
        ("not a second reply to reply A", lambda: service.choose(token, a, a, "a")),
        ("not a reply in your chat", lambda: service.choose(token, latest, a, "a")),
        ("not a reply in your chat", lambda: list(service.another(token, latest))),
        ("does not exist", lambda: list(service.another(token, 10_000))),
    ]:
        with pytest.raises(Refused, match=message):
            call()
    assert count(service) == before


def queries_latest(service: CrowdService, reply: int) -> int:
    with connect(service.settings.db_path) as db:
        return queries.latest_alternative(db, reply)


def test_a_label_on_a_reply_changed_since_it_was_shown_is_refused(service):
    """Two tabs of one volunteer: the second rewrites the reply; the first, still showing the
    model's text, labels it, asks for another reply, rates it: each is refused and nothing is
    stored; the refused rating redraws the chat as it is now, and then a label is about that."""
    page = conversation(service)
    other_tab = Page.__new__(Page)  # the same person in a second tab
    other_tab.__dict__.update(page.__dict__, tab=ChatTab(**vars(page.tab)))
    other_tab.rewrite("Rewritten in the other tab.")
    before = count(service)
    index = page.tab.rows.index(page.target())
    like = gr.LikeData(None, {"index": index, "value": "", "liked": True})
    for call in (
        lambda: page.handlers.label(page.token, page.tab, "joy"),
        lambda: list(page.handlers.another(page.token, page.tab)),
        lambda: page.handlers.like(page.token, page.tab, like),
    ):
        with pytest.warns(UserWarning, match="changed since your page showed it"):
            result = call()
    assert count(service) == before
    page.rows = result[0]["value"]
    assert page.shown_text() == "Rewritten in the other tab."
    check(page, page.label())


def test_only_the_models_replies_can_be_rewritten(service):
    page = conversation(service)
    mine = page.tab.rows.index(None)  # my own first message
    opened = page.handlers.open_editor(page.tab, gr.SelectData(None, {"index": mine, "value": ""}))
    assert opened[1:] == (gr.skip(), gr.skip(), gr.skip())  # no editor on my own words
    with connect(service.settings.db_path) as db:
        my_message = db.execute("SELECT id FROM messages WHERE role = 'user'").fetchone()[0]
    before = count(service)
    with pytest.raises(Refused, match="Only the model's replies"):
        service.rewrite(page.token, my_message, "I said something else.")
    page.tab.editing = my_message  # a forged tab
    with pytest.warns(UserWarning, match="model to rewrite first"):
        page.handlers.save_edit(page.token, page.tab, "I said something else.")
    assert count(service) == before
