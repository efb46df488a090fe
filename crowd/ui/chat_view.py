"""What the chat tab draws and remembers: the tab's scratch state (which chat row is which
reply, and the text each shows), the chat rows drawn from the service's view of a conversation
(a rewritten reply with its "edited" marker, the thumbs as stored), and the A/B panel."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from crowd.service import Shown
from crowd.ui.components import inert
from storage.vocabulary import Kind

FEEDBACK = {1: "Like", -1: "Dislike"}  # a rating as the chatbot's thumbs show it
EDITED = "✎ Edited by you · show the model's reply"  # the marker under a rewritten reply


@dataclass
class LastCorrection:
    """The correction the Undo button withdraws, and when it was saved (time.monotonic())."""

    correction_id: int
    kind: Kind
    saved_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Pair:
    """Reply A (in the chat) and its second reply B, as the A/B panel shows them."""

    a: int
    b: int
    a_text: str
    b_text: str


@dataclass
class ChatTab:
    """Per-tab scratch (a `gr.State`): nothing here survives a reload, and nothing needs to."""

    conversation_id: int | None = None
    rows: list[int | None] = field(default_factory=list)  # per chat row: its reply; None = mine
    texts: dict[int, str] = field(default_factory=dict)  # reply -> the text the chat shows
    written: dict[int, str] = field(default_factory=dict)  # reply -> what the model wrote
    pair: Pair | None = None  # the A/B panel's pair awaiting a pick
    editing: int | None = None  # the reply in the editor
    last: LastCorrection | None = None
    round: int | None = None  # the round this chat belongs to

    def last_reply(self) -> int | None:
        return next((m for m in reversed(self.rows) if m is not None), None)

    def reply_at(self, index: object) -> int | None:
        """The reply drawn at chat row `index` (its "edited" marker included), or None."""
        index = index[0] if isinstance(index, (list, tuple)) else index
        return self.rows[index] if isinstance(index, int) and 0 <= index < len(self.rows) else None


def user_row(text: str) -> dict:
    """A chat row showing `text` as typed (the chatbot renders HTML even with Markdown off)."""
    return {"role": "user", "content": inert(text, markdown=False)}


def bot_row(text: str) -> dict:
    return {"role": "assistant", "content": inert(text, markdown=False)}


def draw(view: list[Shown], tab: ChatTab) -> tuple[list[dict], list[str | None]]:
    """The chat rows and thumbs for the service's view; records in `tab` which row is which
    reply and what text it shows. A rewritten reply shows the rewrite, then a folded marker
    holding the model's text (one bubble: consecutive replies are grouped)."""
    rows: list[dict] = []
    tab.rows, tab.texts, tab.written = [], {}, {}
    feedback: list[str | None] = []
    for message in view:
        if message.role == "user":
            rows.append(user_row(message.text))
            tab.rows.append(None)
            continue
        rows.append(bot_row(message.text))
        tab.rows.append(message.message_id)
        tab.texts[message.message_id] = message.text
        tab.written[message.message_id] = message.written
        if message.edited:
            marker = {"title": EDITED, "status": "done"}
            rows.append({**bot_row(message.written), "metadata": marker})
            tab.rows.append(message.message_id)
        feedback.append(FEEDBACK.get(message.rating or 0))
    return rows, feedback


def pair_html(pair: Pair | None, streaming: bool = False) -> str:
    """Replies A and B side by side (stacked on a phone), labelled; while B is still being
    written it says so (and the panel is not yet marked `ready`)."""
    if pair is None:
        return ""
    side = (
        '<div class="crowd-ab-side crowd-ab-{key}"><h4>{title}</h4>'
        '<p class="crowd-ab-text">{text}</p></div>'
    )
    b_title = "Reply B · new" + (" (being written…)" if streaming else "")
    return (
        f'<div class="crowd-ab-pair{"" if streaming else " ready"}">'
        + side.format(key="a", title="Reply A · in your chat", text=inert(pair.a_text))
        + side.format(key="b", title=b_title, text=inert(pair.b_text or "…"))
        + "</div>"
    )
