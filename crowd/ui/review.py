"""The Review tab: one correction by someone else at a time, endorse / reject / skip. Thin
handlers over `crowd.review.Reviews`; a refusal becomes a toast and changes nothing."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import gradio as gr

from crowd.limits import Refused
from crowd.review import Reviews
from crowd.ui.components import ack, inert, warn

EMPTY = "Nothing to review right now: come back after others have corrected a few replies."
CHOICE_WORDS = {"a": "reply A", "b": "reply B", "tie": "a tie", "both_bad": "both bad"}


@dataclass
class ReviewTab:
    """Per-tab scratch: the item shown and what this tab skipped."""

    item: dict | None = None
    skipped: set[int] = field(default_factory=set)


class ReviewHandlers:
    def __init__(self, reviews: Reviews):
        self.reviews = reviews

    def show(self, token: str | None, tab: ReviewTab) -> tuple[ReviewTab, str]:
        """The next item to review (fewest reviews first), skipping what this tab skipped."""
        try:
            queue = self.reviews.queue(token, limit=len(tab.skipped) + 5)
        except Refused as exc:
            return ReviewTab(None, tab.skipped), html.escape(str(exc))
        item = next((i for i in queue if i["correction_id"] not in tab.skipped), None)
        return ReviewTab(item, tab.skipped), render(item)

    def verdict(self, verdict: str):
        def handler(token: str | None, tab: ReviewTab) -> tuple[ReviewTab, str]:
            if tab.item is None:
                return self.show(token, tab)
            try:
                self.reviews.review(token, tab.item["correction_id"], verdict)
                ack("Thanks: your review is saved.")
            except Refused as exc:
                warn(exc)
                tab.skipped.add(tab.item["correction_id"])
            return self.show(token, tab)

        handler.__name__ = verdict
        return handler

    def skip(self, token: str | None, tab: ReviewTab) -> tuple[ReviewTab, str]:
        if tab.item is not None:
            tab.skipped.add(tab.item["correction_id"])
        return self.show(token, tab)


def render(item: dict | None) -> str:
    """The item as Markdown: the question, the model's reply and what the volunteer did."""
    if item is None:
        return EMPTY
    asked = item["prompt"][-1]["content"] if item["prompt"] else ""
    lines = [
        f"**They asked:** {_quote(asked)}",
        f"**{'The reply, as they had rewritten it' if item.get('edited') else 'The model replied'}:** "
        f"{_quote(item['original'])}",
    ]
    if item["kind"] == "rewrite":
        lines.append(f"**Their rewrite:** {_quote(item['rewrite'])}")
        question = "Is the rewrite a better reply?"
    elif item["kind"] == "choice":
        lines.append(f"**A second reply (B):** {_quote(item['other_reply'] or '')}")
        lines.append(f"**They picked:** {CHOICE_WORDS.get(item['choice'], item['choice'])}")
        question = "Do you agree with their pick?"
    else:
        lines.append(f"**They labelled its emotion:** {inert(item['emotion'])}")
        question = "Does the label fit the reply?"
    return "\n\n".join([*lines, f"*{question}* (reviews so far: {item['reviews']})"])


def _quote(text: str) -> str:
    return inert(text)


def review_tab() -> dict:
    """The tab's components (built inside a gr.Tab)."""
    r: dict[str, gr.components.Component] = {"item": gr.Markdown(EMPTY, elem_id="review-item")}
    with gr.Row(elem_id="review-actions"):
        r["endorse"] = gr.Button("Endorse", variant="primary", elem_id="review-endorse")
        r["reject"] = gr.Button("Reject", variant="stop", elem_id="review-reject")
        r["skip"] = gr.Button("Skip", variant="secondary", elem_id="review-skip")
    gr.Markdown(
        "Endorse what makes the model better at the campaign's task; reject spam, off-task or "
        "wrong corrections. Your own corrections never show here.",
        elem_classes=["crowd-help"],
    )
    return r


def wire_review(handlers: ReviewHandlers, token, r: dict, opened) -> gr.State:
    """Wire the tab; `opened` is the event (the tab's select) that loads the first item."""
    state = gr.State(ReviewTab())
    opened(handlers.show, [token, state], [state, r["item"]], api_visibility="private")
    for verdict in ("endorse", "reject"):
        r[verdict].click(
            handlers.verdict(verdict), [token, state], [state, r["item"]], api_visibility="private"
        )
    r["skip"].click(handlers.skip, [token, state], [state, r["item"]], api_visibility="private")
    return state
