"""Volunteer handlers: thin adapters from Gradio events to `CrowdService`.

Each handler takes the signed token from the browser and the tab's scratch state (`ChatTab`),
calls the service, and returns what the page shows. The service re-derives who the caller is
and what they may touch; the tab only remembers which chat row is which stored message, so a
forged row id gets the service's refusal like any other bad input. A `Refused` becomes a
warning toast and leaves the page (and the database) as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import gradio as gr

from crowd.limits import Refused
from crowd.service import CHOICES, CrowdService
from crowd.ui.components import ack, address_of, as_typed, inert, warn

CHOICE_WORDS = {"a": "reply A", "b": "reply B", "tie": "a tie", "both_bad": "both bad"}
WHAT = {"rewrite": "rewrite", "rating": "rating", "emotion": "emotion label", "choice": "choice"}


@dataclass
class LastCorrection:
    """The correction the Undo button withdraws; a rewrite also remembers the text it replaced."""

    correction_id: int
    kind: str
    row: int | None = None
    previous: str | None = None


@dataclass
class ChatTab:
    """Per-tab scratch (a `gr.State`): nothing here survives a reload, and nothing needs to."""

    conversation_id: int | None = None
    message_ids: list[int | None] = field(default_factory=list)  # per chat row; None = mine
    pair: tuple[int, int] | None = None  # (reply A, reply B) awaiting a choice
    ratings: dict[int, int] = field(default_factory=dict)  # message id -> rating correction
    last: LastCorrection | None = None
    round: int | None = None  # the round this chat belongs to

    def last_reply(self) -> int | None:
        return next((m for m in reversed(self.message_ids) if m is not None), None)


def user_row(text: str) -> dict:
    """A chat row showing `text` as typed (the chatbot renders HTML: `inert`)."""
    return {"role": "user", "content": inert(text, markdown=False)}


def bot_row(text: str) -> dict:
    return {"role": "assistant", "content": inert(text, markdown=False)}


def plain(history: object) -> list[dict]:
    """The chatbot's value as plain role/content rows (Gradio adds metadata keys). A value
    that is not a list of rows (from a client calling the endpoint directly) counts as an
    empty chat: what the service does depends on the tab, never on this."""
    if not isinstance(history, list):
        return []
    return [
        {"role": row["role"], "content": row.get("content")}
        for row in history
        if isinstance(row, dict) and row.get("role") in ("user", "assistant")
    ]


def ack_line(last: LastCorrection | None, window_s: float) -> str:
    if last is None:
        return ""
    return (
        f"Saved your {WHAT.get(last.kind, last.kind)}. You can undo it for "
        f"{int(window_s // 60)} minutes."
    )


class ChatHandlers:
    def __init__(self, service: CrowdService):
        self.service = service
        self.proxies = service.settings.trusted_proxies  # whose X-Forwarded-For counts

    @property
    def window_s(self) -> float:
        return self.service.limits.undo_window_s

    # -- chat ------------------------------------------------------------------------------

    def send(
        self,
        token: str | None,
        tab: ChatTab,
        text: str,
        history: list | None,
        request: gr.Request = None,
    ) -> Iterator[tuple[list, ChatTab, str]]:
        """Stream the group model's reply. Yields (chat rows, tab, message box)."""
        before = plain(history)
        rows = before + [user_row(text), bot_row("")]
        yield rows, tab, ""
        try:
            for step in self.service.send(
                token, tab.conversation_id, text, address_of(request, self.proxies)
            ):
                if tab.conversation_id not in (None, step.conversation_id):
                    # The service started a fresh conversation: a new round has begun.
                    rows, tab = [user_row(text), bot_row("")], ChatTab()
                    ack("A new round has started, so this is a new conversation.")
                tab.conversation_id = step.conversation_id
                rows[-1] = bot_row(step.text)
                if step.message_id is not None:
                    tab.message_ids = tab.message_ids[: len(rows) - 2] + [None, step.message_id]
                    tab.pair = None
                yield rows, tab, ""
        except Refused as exc:
            warn(exc)
            yield before, tab, text  # as it was, with the message back in the box

    def another(
        self, token: str | None, tab: ChatTab, history: list | None, request: gr.Request = None
    ) -> Iterator[tuple[list, ChatTab, dict]]:
        """A second reply (B) to the last turn, for an A/B choice.
        Yields (rows, tab, choice row)."""
        before = plain(history)
        first = tab.pair[0] if tab.pair else tab.last_reply()
        if first is None:
            warn(Refused("Chat first: there is no reply to compare yet."))
            yield before, tab, gr.update()
            return
        rows = before + [bot_row("")]
        try:
            for step in self.service.another(token, first, address_of(request, self.proxies)):
                rows[-1] = bot_row(step.text)
                if step.message_id is not None:
                    tab.message_ids = tab.message_ids[: len(rows) - 1] + [step.message_id]
                    tab.pair = (first, step.message_id)
                yield rows, tab, gr.update(visible=tab.pair is not None)
        except Refused as exc:
            warn(exc)
            yield before, tab, gr.update()

    def new_conversation(self, tab: ChatTab) -> tuple[list, ChatTab]:
        return [], ChatTab(last=tab.last, round=tab.round)

    # -- corrections -------------------------------------------------------------------------

    def edit(
        self,
        token: str | None,
        tab: ChatTab,
        history: list | None,
        data: gr.EditData,
        request: gr.Request = None,
    ) -> tuple[list, ChatTab, str]:
        """An in-place rewrite of a reply. Returns (rows, tab, acknowledgement)."""
        rows = plain(history)
        index = data.index if isinstance(data.index, int) else data.index[0]
        previous = data.previous_value if isinstance(data.previous_value, str) else None
        message_id = tab.message_ids[index] if 0 <= index < len(tab.message_ids) else None
        try:
            if message_id is None:
                raise Refused("Only the model's replies can be rewritten.")
            correction = self.service.rewrite(
                token, message_id, as_typed(data.value), address_of(request, self.proxies)
            )
        except Refused as exc:
            warn(exc)
            if previous is not None and 0 <= index < len(rows):
                rows[index]["content"] = previous
            return rows, tab, gr.update()  # type: ignore[return-value]
        rows[index]["content"] = inert(as_typed(data.value).strip(), markdown=False)
        tab.last = LastCorrection(correction, "rewrite", index, previous)
        ack("Thanks: your rewrite is saved.")
        return rows, tab, ack_line(tab.last, self.window_s)

    def like(
        self, token: str | None, tab: ChatTab, data: gr.LikeData, request: gr.Request = None
    ) -> tuple[ChatTab, str]:
        """Thumbs up or down on a reply; the other thumb replaces the rating (the service keeps
        one per reply), a second click on the same thumb withdraws it."""
        index = data.index if isinstance(data.index, int) else data.index[0]
        message_id = tab.message_ids[index] if 0 <= index < len(tab.message_ids) else None
        try:
            if message_id is None:
                raise Refused("That reply is not part of this conversation any more.")
            if data.liked not in (True, False):  # the same thumb clicked again: withdraw
                if message_id in tab.ratings:
                    self.service.undo(token, tab.ratings.pop(message_id))
                return tab, "Rating withdrawn."
            value = 1 if data.liked else -1
            tab.ratings[message_id] = self.service.rate_reply(
                token, message_id, value, address_of(request, self.proxies)
            )
        except Refused as exc:
            warn(exc)
            return tab, gr.update()  # type: ignore[return-value]
        tab.last = LastCorrection(tab.ratings[message_id], "rating")
        ack("Thanks: your rating is saved.")
        return tab, ack_line(tab.last, self.window_s)

    def label(
        self, token: str | None, tab: ChatTab, emotion: str | None, request: gr.Request = None
    ) -> tuple[ChatTab, str]:
        """Label the last reply with one of the 28 emotions."""
        try:
            message_id = tab.last_reply()
            if message_id is None:
                raise Refused("Chat first: there is no reply to label yet.")
            if not emotion:
                raise Refused("Pick an emotion from the list first.")
            correction = self.service.label(
                token, message_id, emotion, address_of(request, self.proxies)
            )
        except Refused as exc:
            warn(exc)
            return tab, gr.update()  # type: ignore[return-value]
        tab.last = LastCorrection(correction, "emotion")
        ack(f"Thanks: the last reply is labelled {emotion}.")
        return tab, ack_line(tab.last, self.window_s)

    def choose(
        self, token: str | None, tab: ChatTab, choice: str, request: gr.Request = None
    ) -> tuple[ChatTab, str, dict]:
        """A / B / tie / both bad between the last reply and its second reply."""
        try:
            if tab.pair is None:
                raise Refused("Ask for another reply first, then compare the two.")
            if choice not in CHOICES:
                raise Refused("Pick A, B, tie or both bad.")
            correction = self.service.choose(
                token, tab.pair[0], tab.pair[1], choice, address_of(request, self.proxies)
            )
        except Refused as exc:
            warn(exc)
            return tab, gr.update(), gr.update()  # type: ignore[return-value]
        tab.pair = None
        tab.last = LastCorrection(correction, "choice")
        ack(f"Thanks: you picked {CHOICE_WORDS[choice]}.")
        return tab, ack_line(tab.last, self.window_s), gr.update(visible=False)

    def chooser(self, choice: str):
        """The handler of one choice button (Gradio needs a function per button)."""

        def choose(
            token: str | None, tab: ChatTab, request: gr.Request = None
        ) -> tuple[ChatTab, str, dict]:
            return self.choose(token, tab, choice, request)

        return choose

    def undo(
        self, token: str | None, tab: ChatTab, history: list | None
    ) -> tuple[list, ChatTab, str]:
        """Withdraw the last correction; an undone rewrite shows the model's reply again."""
        rows = plain(history)
        last = tab.last
        try:
            if last is None:
                raise Refused("There is nothing to undo.")
            self.service.undo(token, last.correction_id)
        except Refused as exc:
            warn(exc)
            return rows, tab, gr.update()  # type: ignore[return-value]
        if (
            last.kind == "rewrite"
            and last.row is not None
            and last.previous is not None
            and last.row < len(rows)
        ):
            rows[last.row]["content"] = last.previous
        tab.ratings = {m: c for m, c in tab.ratings.items() if c != last.correction_id}
        tab.last = None
        ack(f"Your {WHAT.get(last.kind, last.kind)} is withdrawn.")
        return rows, tab, f"Your {WHAT.get(last.kind, last.kind)} was withdrawn."
