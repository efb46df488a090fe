"""Volunteer handlers: thin adapters from Gradio events to `CrowdService`.

Each handler takes the signed token from the browser and the tab's scratch state (`ChatTab`),
calls the service, and returns what the page shows. The chat is always drawn from the service's
view of the conversation (`CrowdService.conversation`: a reply the volunteer rewrote shows the
rewrite, with an "edited" marker holding the model's text), and every correction tells the
service which text the page shows, so that what is stored is what was shown (crowd/lessons.py).
The service re-derives who the caller is and what they may touch; a `Refused` becomes a warning
toast and leaves the page (and the database) as it was.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator

import gradio as gr

from crowd.limits import Refused
from crowd.service import CrowdService
from crowd.ui.chat_view import (  # noqa: F401 (ChatTab, Pair: the page's state, imported from here)
    ChatTab,
    LastCorrection,
    Pair,
    bot_row,
    draw,
    pair_html,
    user_row,
)
from crowd.ui.components import ack, address_of, warn
from storage.vocabulary import CHOICE_WORDS, CHOICES, KIND_WORDS, Kind

HIDDEN, SHOWN = gr.update(visible=False), gr.update(visible=True)
LAST_REPLY_BUTTONS = 4  # send, rewrite, another, label: they wait while a reply streams
BUSY = (gr.update(interactive=False),) * LAST_REPLY_BUTTONS
READY = (gr.update(interactive=True),) * LAST_REPLY_BUTTONS


def ack_line(last: LastCorrection | None, window_s: float) -> str:
    if last is None:
        return ""
    return f"Saved your {KIND_WORDS[last.kind]}. You can undo it for {int(window_s // 60)} minutes."


class ChatHandlers:
    def __init__(self, service: CrowdService):
        self.service = service
        self.proxies = service.settings.trusted_proxies  # whose X-Forwarded-For counts

    @property
    def window_s(self) -> float:
        return self.service.limits.undo_window_s

    def chat(self, token: str | None, tab: ChatTab) -> dict:
        """The chatbot's update: the conversation as the service shows it, with its thumbs."""
        try:
            view = self.service.conversation(token, tab.conversation_id)
        except Refused:
            view = []
        rows, feedback = draw(view, tab)
        return gr.update(value=rows, feedback_value=feedback)

    def _saved(self, tab: ChatTab, correction_id: int, kind: Kind, thanks: str) -> tuple:
        """(ack line, undo button) after a correction was stored."""
        tab.last = LastCorrection(correction_id, kind)
        ack(thanks)
        return ack_line(tab.last, self.window_s), SHOWN

    # -- chat ------------------------------------------------------------------------------

    def send(
        self, token: str | None, tab: ChatTab, text: str, request: gr.Request | None = None
    ) -> Iterator[tuple]:
        """Stream the group model's reply. While it streams, the buttons that act on "the last
        reply" (send, rewrite, another, label) wait: they would act on the one before it.
        Yields (chat, tab, message box, A/B panel, *those buttons)."""
        before = self.chat(token, tab)
        rows = [*before["value"], user_row(text), bot_row("")]
        tab.pair = None  # a new turn: the A/B panel's pair was about an earlier reply
        chat = gr.update(value=rows, feedback_value=before["feedback_value"])
        yield chat, tab, "", HIDDEN, *BUSY
        try:
            for step in self.service.send(
                token, tab.conversation_id, text, address_of(request, self.proxies)
            ):
                if tab.conversation_id not in (None, step.conversation_id):
                    # The service started a fresh conversation: a new round has begun.
                    rows, tab = [user_row(text), bot_row("")], ChatTab(round=tab.round)
                    ack("A new round has started, so this is a new conversation.")
                tab.conversation_id = step.conversation_id
                rows[-1] = bot_row(step.text)
                if step.message_id is not None:
                    yield self.chat(token, tab), tab, "", HIDDEN, *READY
                else:
                    yield gr.update(value=rows), tab, "", HIDDEN, *BUSY
        except Refused as exc:
            warn(exc)  # as it was, with the message back in the box
            yield self.chat(token, tab), tab, text, HIDDEN, *READY

    def starter(
        self,
        token: str | None,
        tab: ChatTab,
        data: gr.SelectData,
        request: gr.Request | None = None,
    ) -> Iterator[tuple]:
        """One of the organizer's suggested prompts, clicked in the empty chat: sent as is."""
        value = data.value if isinstance(data.value, dict) else {}
        yield from self.send(token, tab, str(value.get("text") or ""), request)

    def another(
        self, token: str | None, tab: ChatTab, request: gr.Request | None = None
    ) -> Iterator[tuple]:
        """A second reply (B) to the last reply in the chat (A), from the conversation before A,
        shown beside A for a pick. Yields (tab, A/B panel, the pair's HTML)."""
        first = tab.last_reply()
        if first is None:
            warn(Refused("Chat first: there is no reply to compare yet."))
            yield tab, gr.skip(), gr.skip()
            return
        a_text = tab.texts[first]
        tab.pair = None
        try:
            for step in self.service.another(
                token, first, address_of(request, self.proxies), shown=a_text
            ):
                if step.message_id is None:
                    yield tab, SHOWN, pair_html(Pair(first, 0, a_text, step.text), streaming=True)
                else:
                    tab.pair = Pair(first, step.message_id, a_text, step.text)
                    yield tab, SHOWN, pair_html(tab.pair)
        except Refused as exc:
            warn(exc)
            yield tab, HIDDEN, ""

    def new_conversation(self, tab: ChatTab) -> tuple:
        """Returns (chat, tab, A/B panel, editor)."""
        return [], ChatTab(last=tab.last, round=tab.round), HIDDEN, HIDDEN

    # -- the editor ----------------------------------------------------------------------------

    def open_editor(self, tab: ChatTab, data: gr.SelectData) -> tuple:
        """A click on a reply opens the editor on it (one's own messages stay as written).
        Returns (tab, editor, the model's text, the text box)."""
        return self._editor(tab, tab.reply_at(data.index))

    def edit_last(self, tab: ChatTab) -> tuple:
        """The "Rewrite the last reply" button: the editor on the last reply."""
        if tab.last_reply() is None:
            warn(Refused("Chat first: there is no reply to rewrite yet."))
            return tab, gr.skip(), gr.skip(), gr.skip()
        return self._editor(tab, tab.last_reply())

    def _editor(self, tab: ChatTab, message_id: int | None) -> tuple:
        if message_id is None:
            return tab, gr.skip(), gr.skip(), gr.skip()
        tab.editing = message_id
        original = (
            '<p class="crowd-editor-label">The model wrote:</p>'
            f'<div class="crowd-editor-original">{html.escape(tab.written[message_id])}</div>'
        )
        return tab, SHOWN, original, tab.texts[message_id]

    def cancel_edit(self, tab: ChatTab) -> tuple:
        """Returns (tab, editor)."""
        tab.editing = None
        return tab, HIDDEN

    # -- corrections -------------------------------------------------------------------------

    def save_edit(
        self, token: str | None, tab: ChatTab, text: str, request: gr.Request | None = None
    ) -> tuple:
        """Save the editor's text as the rewrite of the reply in it; from then on the chat shows
        the rewrite (marked edited), and so does the A/B panel when the reply is its A.
        Returns (chat, tab, ack, undo, editor, the pair's HTML)."""
        message_id, skip = tab.editing, gr.skip()
        try:
            if message_id is None or message_id not in tab.texts:
                raise Refused("Pick a reply of the model to rewrite first.")
            correction = self.service.rewrite(
                token,
                message_id,
                text,
                address_of(request, self.proxies),
                shown=tab.texts[message_id],
            )
        except Refused as exc:
            warn(exc)
            return skip, tab, skip, skip, skip, skip
        tab.editing = None
        chat = self.chat(token, tab)
        if tab.pair is not None and tab.pair.a == message_id:
            tab.pair = Pair(message_id, tab.pair.b, tab.texts[message_id], tab.pair.b_text)
        line, undo = self._saved(tab, correction, "rewrite", "Thanks: your rewrite is saved.")
        return chat, tab, line, undo, HIDDEN, pair_html(tab.pair)

    def like(
        self, token: str | None, tab: ChatTab, data: gr.LikeData, request: gr.Request | None = None
    ) -> tuple:
        """Thumbs up or down on a reply as shown; the other thumb replaces the rating (the
        service keeps one per reply), a second click on the same thumb withdraws it.
        Returns (chat, tab, ack, undo): the thumbs as stored."""
        message_id, skip = tab.reply_at(data.index), gr.skip()
        try:
            if message_id is None:
                raise Refused("That reply is not part of this conversation any more.")
            if data.liked not in (True, False):  # the same thumb clicked again: withdraw
                rating = self._rating_of(token, tab, message_id)
                if rating is not None:
                    self.service.undo(token, rating)
                ack("Rating withdrawn.")
                if tab.last is not None and tab.last.correction_id == rating:
                    tab.last = None  # nothing left for Undo to withdraw
                    return self.chat(token, tab), tab, "Rating withdrawn.", HIDDEN
                return self.chat(token, tab), tab, "Rating withdrawn.", skip
            correction = self.service.rate_reply(
                token,
                message_id,
                1 if data.liked else -1,
                address_of(request, self.proxies),
                shown=tab.texts[message_id],
            )
        except Refused as exc:
            warn(exc)
            return self.chat(token, tab), tab, skip, skip
        line, undo = self._saved(tab, correction, "rating", "Thanks: your rating is saved.")
        return self.chat(token, tab), tab, line, undo

    def _rating_of(self, token: str | None, tab: ChatTab, message_id: int) -> int | None:
        view = self.service.conversation(token, tab.conversation_id)
        return next((m.rating_id for m in view if m.message_id == message_id), None)

    def label(
        self,
        token: str | None,
        tab: ChatTab,
        emotion: str | None,
        request: gr.Request | None = None,
    ) -> tuple:
        """Label the last reply, as the chat shows it, with one of the 28 emotions.
        Returns (tab, ack, undo)."""
        skip = gr.skip()
        try:
            message_id = tab.last_reply()
            if message_id is None:
                raise Refused("Chat first: there is no reply to label yet.")
            if not emotion:
                raise Refused("Pick an emotion from the list first.")
            correction = self.service.label(
                token,
                message_id,
                emotion,
                address_of(request, self.proxies),
                shown=tab.texts[message_id],
            )
        except Refused as exc:
            warn(exc)
            return tab, skip, skip
        return tab, *self._saved(
            tab, correction, "emotion", f"Thanks: the last reply is labelled {emotion}."
        )

    def choose(
        self, token: str | None, tab: ChatTab, choice: str, request: gr.Request | None = None
    ) -> tuple:
        """A / B / tie / both bad between the two replies the A/B panel shows.
        Returns (tab, ack, undo, A/B panel)."""
        skip = gr.skip()
        try:
            if tab.pair is None:
                raise Refused("Ask for another reply first, then compare the two.")
            if choice not in CHOICES:
                raise Refused("Pick A, B, tie or both bad.")
            pair = tab.pair
            correction = self.service.choose(
                token,
                pair.a,
                pair.b,
                choice,
                address_of(request, self.proxies),
                shown=(pair.a_text, pair.b_text),
            )
        except Refused as exc:
            warn(exc)
            return tab, skip, skip, skip
        tab.pair = None
        thanks = f"Thanks: you picked {CHOICE_WORDS[choice]}."
        return tab, *self._saved(tab, correction, "choice", thanks), HIDDEN

    def chooser(self, choice: str):
        """The handler of one choice button (Gradio needs a function per button)."""

        def choose(token: str | None, tab: ChatTab, request: gr.Request | None = None) -> tuple:
            return self.choose(token, tab, choice, request)

        return choose

    def undo(self, token: str | None, tab: ChatTab) -> tuple:
        """Withdraw the last correction; an undone rewrite shows the model's reply again.
        Returns (chat, tab, ack, undo, the pair's HTML)."""
        last, skip = tab.last, gr.skip()
        try:
            if last is None:
                raise Refused("There is nothing to undo.")
            self.service.undo(token, last.correction_id)
        except Refused as exc:
            warn(exc)
            return skip, tab, skip, skip, skip
        tab.last = None
        chat = self.chat(token, tab)
        if tab.pair is not None and tab.pair.a in tab.texts:
            pair = tab.pair
            tab.pair = Pair(pair.a, pair.b, tab.texts[pair.a], pair.b_text)
        what = KIND_WORDS[last.kind]
        ack(f"Your {what} is withdrawn.")
        return chat, tab, f"Your {what} was withdrawn.", HIDDEN, pair_html(tab.pair)

    def expire(self, tab: ChatTab) -> tuple:
        """Timer: once the undo window of the last correction has passed, its line and the Undo
        button go (the tab itself is not written: a timer must not race the chat's events).
        Returns (ack, undo)."""
        last = tab.last if tab else None
        if last is not None and time.monotonic() - last.saved_at > self.window_s:
            return "", HIDDEN
        return gr.skip(), gr.skip()
