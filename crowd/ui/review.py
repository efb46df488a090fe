"""The Review tab: one item the server deals at a time, endorse / reject / skip. Thin handlers
over `crowd.review.Reviews`; a refusal becomes a toast and changes nothing."""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from crowd.limits import Refused
from crowd.review import Item, Reviews
from crowd.ui.components import ack, address_of, inert, warn
from storage.vocabulary import CHOICE_WORDS, Verdict

EMPTY = "Nothing to review right now: come back after others have corrected a few replies."


@dataclass
class ReviewTab:
    """Per-tab scratch: the item shown (the server remembers what was dealt and skipped)."""

    item: Item | None = None


class ReviewHandlers:
    def __init__(self, reviews: Reviews, proxies: tuple = ()):
        self.reviews = reviews
        self.proxies = proxies  # whose X-Forwarded-For counts

    def show(
        self, token: str | None, tab: ReviewTab, request: gr.Request | None = None
    ) -> tuple[ReviewTab, str]:
        """The next item the server deals (or the one dealt and not yet answered)."""
        try:
            queue = self.reviews.queue(token, limit=1, address=address_of(request, self.proxies))
        except Refused as exc:
            return ReviewTab(None), html.escape(str(exc))
        item = queue[0] if queue else None
        return ReviewTab(item), render(item)

    def verdict(self, verdict: str):
        def handler(
            token: str | None, tab: ReviewTab, request: gr.Request | None = None
        ) -> tuple[ReviewTab, str]:
            if tab.item is not None:
                try:
                    address = address_of(request, self.proxies)
                    self.reviews.review(token, tab.item["item_id"], verdict, address)
                    ack("Thanks: your review is saved.")
                except Refused as exc:
                    warn(exc)
            return self.show(token, tab, request)

        handler.__name__ = verdict
        return handler

    def skip(
        self, token: str | None, tab: ReviewTab, request: gr.Request | None = None
    ) -> tuple[ReviewTab, str]:
        if tab.item is not None:
            try:
                self.reviews.skip(token, tab.item["item_id"], address_of(request, self.proxies))
            except Refused as exc:
                warn(exc)
        return self.show(token, tab, request)


def render(item: Item | None) -> str:
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
        lines.append(f"**They picked:** {pick_words(item['choice'])}")
        question = "Do you agree with their pick?"
    else:
        lines.append(f"**They labelled its emotion:** {inert(item['emotion'])}")
        question = "Does the label fit the reply?"
    return "\n\n".join([*lines, f"*{question}* (reviews so far: {item['reviews']})"])


def pick_words(choice: str | None) -> str:
    """A stored A/B pick as it reads in a sentence ('reply A'); anything else as stored."""
    for known, words in CHOICE_WORDS.items():
        if choice == known:
            return words
    return str(choice)


def _quote(text: str | None) -> str:
    return inert(text)


@dataclass(frozen=True)
class ReviewPanel:
    """The tab's components (`review_tab`)."""

    item: gr.Markdown
    verdicts: dict[Verdict, gr.Button]  # one per verdict (storage.vocabulary.VERDICTS)
    skip: gr.Button


def review_tab() -> ReviewPanel:
    """The tab's components (built inside a gr.Tab)."""
    item = gr.Markdown(EMPTY, elem_id="review-item")
    with gr.Row(elem_id="review-actions"):
        verdicts: dict[Verdict, gr.Button] = {
            "endorse": gr.Button("Endorse", variant="primary", elem_id="review-endorse"),
            "reject": gr.Button("Reject", variant="stop", elem_id="review-reject"),
        }
        skip = gr.Button("Skip", variant="secondary", elem_id="review-skip")
    gr.Markdown(
        "Endorse what makes the model better at the campaign's task; reject spam, off-task or "
        "wrong corrections. The server deals the items, one at a time; your own corrections "
        "never show here.",
        elem_classes=["crowd-help"],
    )
    return ReviewPanel(item, verdicts, skip)


def wire_review(handlers: ReviewHandlers, token, r: ReviewPanel, opened) -> gr.State:
    """Wire the tab; `opened` is the event (the tab's select) that loads the first item."""
    state = gr.State(ReviewTab())
    opened(handlers.show, [token, state], [state, r.item], api_visibility="private")
    for verdict, button in r.verdicts.items():
        button.click(
            handlers.verdict(verdict), [token, state], [state, r.item], api_visibility="private"
        )
    r.skip.click(handlers.skip, [token, state], [state, r.item], api_visibility="private")
    return state
