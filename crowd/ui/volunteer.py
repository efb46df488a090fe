"""The volunteer page: terms and join, then chat and corrections, points, and the last round.
Layout and wiring only; the handlers live in `chat.py` and `session.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from crowd.review import Reviews
from crowd.service import CrowdService
from crowd.ui import review as ui_review
from crowd.ui.chat import ChatHandlers, ChatTab
from crowd.ui.components import terms
from crowd.ui.journey import definition_of, emotion_choices, howto_panel
from crowd.ui.session import SessionHandlers
from storage.vocabulary import CHOICE_BUTTONS, Choice

TICK_S = 4.0  # how often an open page polls for a new round, points and results
IDENTITY_KEY = "crowd-sft-identity"  # the browser's localStorage key for the signed token

HELP = (
    "**Click a reply** (or **Rewrite the last reply**) to write a better version: yours teaches "
    "the model. The **thumbs** under a reply rate it. Below: label the last reply's emotion, or "
    "ask for **another reply** and pick the better one."
)


def volunteer_page(
    demo: gr.Blocks, service: CrowdService, browser_secret: str, oauth: bool
) -> None:
    """Build the page inside `demo` and wire its events."""
    session, chat = SessionHandlers(service, oauth), ChatHandlers(service)
    token = gr.BrowserState(None, storage_key=IDENTITY_KEY, secret=browser_secret)
    tab, stamp, round_now = gr.State(ChatTab()), gr.State(None), gr.State(None)
    seen = gr.State("unseen")  # the before/after cards last shown (journey.news)

    join_screen, name, consent, join = _join_screen(service, oauth)
    with gr.Column(visible=False, elem_id="main-screen") as main_screen:
        banner = gr.HTML(elem_id="banner")
        news = gr.Markdown(visible=False, elem_id="round-news")
        howto_panel(service)
        with gr.Tabs():
            with gr.Tab("Chat and correct", id="chat-tab"):
                c = _chat_tab()
            with gr.Tab("Review", id="review-tab") as review_tab:
                r = ui_review.review_tab()
            with gr.Tab("Points and leaderboard", id="points-tab"):
                boards = _points_tab()
            with gr.Tab("Last round", id="round-tab"):
                boards += _round_tab()
                cards = gr.HTML(elem_id="before-after")
        leave = gr.Button(
            "Not you? Forget me in this browser", size="sm", variant="secondary", elem_id="leave"
        )
    timer = gr.Timer(TICK_S)

    screens = [join_screen, main_screen]
    quiet: dict = dict(show_progress="hidden", api_visibility="private")
    # One event draws the banner, the round's news, the before/after cards and the boards from
    # the same moment, so that they never disagree (session.tick).
    tick = dict(
        fn=session.tick,
        inputs=[token, stamp, seen],
        outputs=[banner, round_now, stamp, news, cards, seen, *boards],
        **quiet,
    )
    round_now.change(
        session.new_round,
        [tab, round_now],
        [c.chatbot, tab, c.ack, c.undo, c.ab.column, c.editor.column],
        **quiet,
    )
    gate = dict(fn=session.sign_in_gate, inputs=[token], outputs=[c.sign_in, c.label], **quiet)
    starters = dict(fn=session.starters, inputs=None, outputs=[c.chatbot], **quiet)
    demo.load(session.enter, [token], [token, tab, *screens, name], api_visibility="private").then(
        **tick
    ).then(**gate).then(**starters)
    join.click(session.join, [name, consent], [token, tab, *screens], api_name="join").then(
        **tick
    ).then(**gate).then(**starters)
    timer.tick(**tick)
    timer.tick(chat.expire, [tab], [c.ack, c.undo], **quiet)
    leave.click(session.leave, None, [token, tab, c.chatbot, *screens], api_visibility="private")
    _wire_chat(chat, token, tab, c, tick)
    handlers = ui_review.ReviewHandlers(Reviews(service), service.settings.trusted_proxies)
    ui_review.wire_review(handlers, token, r, review_tab.select)


def _join_screen(service: CrowdService, oauth: bool) -> tuple:
    """The terms (with the campaign's licence, read at each page load) and the join form."""
    with gr.Column(visible=True, elem_id="join-screen") as screen:
        gr.Markdown(lambda: terms(*_licence_and_name(service)), elem_id="terms")
        if oauth:
            gr.LoginButton()
        name = gr.Textbox(
            label="Display name (shown on the leaderboard)",
            max_length=32,
            placeholder="2-32 letters, digits, spaces or . ' - _",
            elem_id="name",
        )
        consent = gr.Checkbox(
            label="I have read the terms above and agree to them", elem_id="consent"
        )
        join = gr.Button("Join", variant="primary", elem_id="join")
    return screen, name, consent, join


def _licence_and_name(service: CrowdService) -> tuple[str, str]:
    campaign, _ = service.context()
    return campaign["licence"], campaign["name"]


@dataclass(frozen=True)
class Editor:
    """The rewrite editor (`_editor`)."""

    column: gr.Column
    original: gr.HTML  # the reply as the page shows it
    text: gr.Textbox
    save: gr.Button
    cancel: gr.Button


@dataclass(frozen=True)
class ABPanel:
    """Replies A and B and the pick buttons (`_ab_panel`)."""

    column: gr.Column
    pair: gr.HTML
    choose: dict[Choice, gr.Button]  # one per A/B choice (storage.vocabulary.CHOICE_BUTTONS)


@dataclass(frozen=True)
class ChatPanel:
    """The Chat and correct tab's components (`_chat_tab`)."""

    sign_in: gr.Markdown  # see SessionHandlers.sign_in_gate
    chatbot: gr.Chatbot
    editor: Editor
    ab: ABPanel
    message: gr.Textbox
    send: gr.Button
    rewrite: gr.Button
    another: gr.Button
    emotion: gr.Dropdown
    label: gr.Button
    new: gr.Button
    definition: gr.Markdown
    ack: gr.Markdown
    undo: gr.Button


def _chat_tab() -> ChatPanel:
    sign_in = gr.Markdown(visible=False, elem_id="sign-in-notice")
    chatbot = gr.Chatbot(
        elem_id="chat",
        render_markdown=False,
        group_consecutive_messages=True,  # a rewritten reply and its "edited" marker: one bubble
        height=400,
        show_label=False,
        buttons=["copy"],
        placeholder="Say hello to your group's model, or start with a suggestion. "
        "Then make its replies better.",
    )
    editor, ab = _editor(), _ab_panel()
    with gr.Row(equal_height=True, elem_id="message-row"):
        message = gr.Textbox(
            show_label=False,
            placeholder="Write to your group's model…",
            max_lines=6,
            scale=6,
            elem_id="message",
            max_length=2000,
        )
        send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
    gr.Markdown(HELP, elem_classes=["crowd-help"])
    with gr.Row(elem_id="actions"):
        rewrite = gr.Button("Rewrite the last reply", scale=1, elem_id="rewrite")
        another = gr.Button("Another reply", scale=1, elem_id="another")
        emotion = gr.Dropdown(
            emotion_choices(),  # each label with its one-line definition
            value=None,
            label="Emotion of the last reply",
            scale=3,
            elem_id="emotion",
        )
        label = gr.Button("Label it", scale=1, elem_id="label")
        new = gr.Button("New conversation", scale=1, variant="secondary", elem_id="new")
    definition = gr.Markdown(elem_id="emotion-definition")
    with gr.Row(equal_height=True, elem_id="ack-row"):
        ack = gr.Markdown(elem_id="ack")
        undo = gr.Button(
            "Undo", size="sm", variant="secondary", scale=0, visible=False, elem_id="undo"
        )
    return ChatPanel(
        sign_in, chatbot, editor, ab, message, send, rewrite, another, emotion, label, new,
        definition, ack, undo,
    )  # fmt: skip


def _editor() -> Editor:
    """The rewrite editor: full width, the model's text above the box, labelled buttons."""
    with gr.Column(visible=False, elem_id="editor") as column:
        gr.Markdown("**Rewrite this reply**: your version teaches the model.")
        original = gr.HTML(elem_id="editor-original")
        text = gr.Textbox(
            label="Your version (Enter saves; Shift+Enter starts a new line)",
            lines=1,
            max_lines=14,
            max_length=4000,
            elem_id="editor-text",
        )
        with gr.Row(elem_id="editor-buttons"):
            save = gr.Button("Save my rewrite", variant="primary", scale=0, elem_id="editor-save")
            cancel = gr.Button("Cancel", scale=0, elem_id="editor-cancel")
    return Editor(column, original, text, save, cancel)


def _ab_panel() -> ABPanel:
    """Replies A and B side by side (stacked on a phone), the pick buttons right under them."""
    with gr.Column(visible=False, elem_id="ab") as column:
        gr.Markdown("**Which reply is better?** Your chat goes on with reply A.")
        pair = gr.HTML(elem_id="ab-pair")
        with gr.Row(elem_id="choice-row", equal_height=True):
            choose = {
                choice: gr.Button(text, size="sm", elem_id=f"choose-{choice}")
                for choice, text in CHOICE_BUTTONS.items()
            }
    return ABPanel(column, pair, choose)


def _points_tab() -> list:
    mine = gr.Markdown(elem_id="mine")
    ledger = gr.Dataframe(
        headers=["round", "group", "points", "why"],
        interactive=False,
        show_label=False,
        elem_id="ledger",
    )
    with gr.Row():
        people = gr.Dataframe(
            headers=["rank", "name", "points", "rounds"],
            interactive=False,
            label="People",
            elem_id="people",
            scale=3,
        )
        groups = gr.Dataframe(
            headers=["group", "wins"], interactive=False, label="Groups", elem_id="groups", scale=2
        )
    return [mine, ledger, people, groups]


def _round_tab() -> list:
    last = gr.Markdown(elem_id="last-round")
    chart = gr.Plot(show_label=False, elem_id="chart", format="png")
    samples = gr.Dataframe(
        headers=["before (champion)", "after (winner)"],
        interactive=False,
        label="Sample replies, before and after",
        wrap=True,
        column_widths=["50%", "50%"],
        elem_id="samples",
        visible=False,
    )
    return [last, chart, samples]


def scroll_to(elem_id: str) -> str:
    """Browser code that scrolls the element into view (a panel opened under the chat)."""
    return f"() => document.getElementById('{elem_id}')?.scrollIntoView({{block: 'nearest'}})"


def _wire_chat(chat: ChatHandlers, token, tab, c: ChatPanel, tick: dict) -> None:
    chatbot, ack_md, undo, ab, editor = c.chatbot, c.ack, c.undo, c.ab, c.editor
    quiet: dict = dict(show_progress="hidden", api_visibility="private")
    send: dict[str, Any] = dict(  # an event's arguments, for two triggers
        fn=chat.send,
        inputs=[token, tab, c.message],
        outputs=[chatbot, tab, c.message, ab.column, c.send, c.rewrite, c.another, c.label],
    )
    c.message.submit(**send, api_visibility="private")
    c.send.click(**send, api_name="send")
    chatbot.example_select(chat.starter, [token, tab], send["outputs"], api_visibility="private")
    opened = [tab, editor.column, editor.original, editor.text]
    chatbot.select(chat.open_editor, [tab], opened, **quiet).then(None, js=scroll_to("editor"))
    c.rewrite.click(chat.edit_last, [tab], opened, **quiet).then(None, js=scroll_to("editor"))
    save: dict[str, Any] = dict(
        fn=chat.save_edit,
        inputs=[token, tab, editor.text],
        outputs=[chatbot, tab, ack_md, undo, editor.column, ab.pair],
    )
    editor.save.click(**save, api_visibility="private").then(**tick)
    editor.text.submit(**save, api_visibility="private").then(**tick)
    editor.cancel.click(chat.cancel_edit, [tab], [tab, editor.column], **quiet)
    chatbot.like(
        chat.like, [token, tab], [chatbot, tab, ack_md, undo], api_visibility="private"
    ).then(**tick)
    c.label.click(chat.label, [token, tab, c.emotion], [tab, ack_md, undo], api_name="label").then(
        **tick
    )
    c.another.click(chat.another, [token, tab], [tab, ab.column, ab.pair], api_name="another").then(
        None, js=scroll_to("ab")
    )
    for choice, button in ab.choose.items():
        button.click(
            chat.chooser(choice),
            [token, tab],
            [tab, ack_md, undo, ab.column],
            api_name=f"choose_{choice}",
        ).then(**tick)
    undo.click(
        chat.undo, [token, tab], [chatbot, tab, ack_md, undo, ab.pair], api_name="undo"
    ).then(**tick)
    c.emotion.change(definition_of, [c.emotion], [c.definition], **quiet)
    fresh: dict[str, Any] = dict(
        fn=chat.new_conversation, inputs=[tab], outputs=[chatbot, tab, ab.column, editor.column]
    )
    c.new.click(**fresh, **quiet)
    chatbot.clear(**fresh, **quiet)
