"""The volunteer's journey around the chat: the how-to (folded under one line), the emotion
labels with their definitions, and the live round
notices. Rendering and wiring only; the copy comes from `crowd.guide`, the facts from
`crowd.views`."""

from __future__ import annotations

import html

import gradio as gr

from crowd import views
from crowd.groups import won_text
from crowd.guide import emotion_definitions, good_rewrite, howto_steps
from crowd.limits import Refused
from crowd.service import CrowdService
from crowd.ui.components import duration, inert, points, reason_text


def howto_text(task: str, target: str | None, reviews_on: bool = False) -> str:
    """The how-to in Markdown: the numbered steps (reviewing among them when the campaign has
    peer review) and one good rewrite for the task."""
    steps = "\n".join(f"{i}. {step}" for i, step in enumerate(howto_steps(reviews_on), 1))
    example = good_rewrite(task, target)
    goal = (
        f"makes the reply convey **{html.escape(target or 'the target emotion')}**"
        if task == "emotion"
        else "is the reply people would **prefer**: helpful, correct and kind"
    )
    return (
        f"### How to take part\n{steps}\n\n"
        f"**A good rewrite** {goal}. Asked *“{html.escape(example['prompt'])}”*, the model "
        f"said *“{html.escape(example['before'])}”*; a good rewrite: "
        f"*“{html.escape(example['after'])}”*"
    )


def emotion_choices() -> list[tuple[str, str]]:
    """(shown, value) per label: each label with its one-line definition, where it is picked."""
    return [(f"{label}: {meaning}", label) for label, meaning in emotion_definitions().items()]


def definition_of(emotion: str | None) -> str:
    """The picked label's definition, under the list (empty before a pick)."""
    meaning = emotion_definitions().get(emotion or "")
    return f"**{emotion}**: {meaning}" if meaning else ""


def howto_panel(service: CrowdService) -> gr.Accordion:
    """The how-to, folded under one line so that the chat and its message box stay on the
    first screen (a 390 x 844 phone included); the campaign's copy is read at each page load."""

    def text() -> str:
        campaign, _ = service.context()
        return howto_text(
            campaign["task"], campaign["target_emotion"], bool(campaign["reviews_on"])
        )

    with gr.Accordion("How to take part (new here? start here)", open=False, elem_id="howto") as h:
        gr.Markdown(text, elem_id="howto-text")
    return h


# -- the round's news: live progress while it is judged, then what it meant for me ---------


def progress_text(p: views.RoundProgress) -> str:
    if p.models:
        left = f", about {duration(int(p.eta_s))}" if p.eta_s is not None else ""
        where = f"{p.judged} of {p.models} models judged{left}"
    else:
        left = f", about {duration(int(p.eta_s))} for this group" if p.eta_s is not None else ""
        where = f"{p.groups_done} of {p.n_groups} groups trained{left}"
    return (
        f"**Round {p.number} is being trained and judged**: {html.escape(p.stage)}; {where}. "
        "You can keep chatting and correcting for the next round meanwhile."
    )


def notice_text(n: views.RoundNotice) -> str:
    if n.winner_group is None:
        outcome = f"**Round {n.number} is over: the champion stayed** (no group's model beat it)."
    else:
        outcome = f"**Round {n.number} is over: {html.escape(won_text(n.winner_group))}.**"
    if n.my_group is None:
        mine = "You did not take part in that round."
    elif n.my_group == n.winner_group:
        mine = f"Your group ({html.escape(n.my_group)}) won!"
    else:
        mine = f"Your group then was {html.escape(n.my_group)}."
    if n.points:
        why = "; ".join(html.escape(reason_text(r)) for r in n.reasons)
        earned = f"You earned **{points(n.points)} points** ({why})."
    else:
        earned = "You earned no points from it" + (
            ": points go to the members of groups that beat the champion."
            if n.my_group is not None
            else "."
        )
    return f"{outcome} {mine} {earned} See **Last round** for what changed."


class JourneyHandlers:
    def __init__(self, service: CrowdService):
        self.service = service

    def news(self, token: str | None, seen: object) -> tuple:
        """Every tick: the round's news line (live progress while a round is judged, else the
        notice of the last finished round; hidden when neither), and my before/after cards
        when the finished rounds or my cards changed since `seen`.
        Returns (news, before/after, seen)."""
        try:
            session = self.service.resume(token)
        except Refused:
            return gr.update(visible=False), gr.skip(), gr.skip()
        campaign, _ = self.service.context()
        db_path = self.service.settings.db_path
        progress = views.round_progress(db_path, campaign)
        notice = views.round_notice(db_path, session.participant_id, campaign["id"])
        if progress is not None:
            news = gr.update(value=progress_text(progress), visible=True)
        elif notice is not None:
            news = gr.update(value=notice_text(notice), visible=True)
        else:
            news = gr.update(visible=False)
        cards = views.before_after(db_path, session.participant_id, campaign)
        now_seen = [cards.number, len(cards.rows), cards.preparing] if cards else None
        if now_seen == seen:
            return news, gr.skip(), gr.skip()
        return news, before_after_html(cards), now_seen


def before_after_html(view: views.BeforeAfter | None) -> str:
    """Cards: each of my prompts with the old and the new champion's reply side by side
    (stacked on a phone), and for the emotion task each reply's distance to the target."""
    if view is None:
        return ""
    e = html.escape
    if not view.rows:
        if view.preparing:
            why = (
                "The old and the new champion are answering your prompts of that round now; "
                "their replies appear here in a few minutes."
            )
        elif view.wrote:
            why = "No before/after replies were made for that round."
        else:
            why = (
                "You wrote no messages that round; chat in this one to see your own prompts "
                "answered by the next winner."
            )
        return (
            f'<div class="crowd-ba"><h3>Round {view.number}: your prompts, before and after</h3>'
            f"<p>{why}</p></div>"
        )
    cards = []
    for row in view.rows:
        cards.append(
            f'<div class="crowd-ba-card"><p class="crowd-ba-prompt">You asked: <i>{inert(row["prompt"])}</i></p>'
            f'<div class="crowd-ba-pair">'
            f"{_side('Before (old champion)', row['before'], row['before_distance'], view.target)}"
            f"{_side('After (new champion)', row['after'], row['after_distance'], view.target)}"
            "</div></div>"
        )
    how = (
        f" The distance is to <b>{e(view.target)}</b> as the round's judge measures it: "
        "smaller is closer."
        if view.target
        else ""
    )
    return (
        f'<div class="crowd-ba" id="before-after-cards"><h3>Round {view.number}: your prompts, '
        f"before and after</h3><p>What the model said to you before the round, and what the "
        f"new champion, trained on the crowd's corrections, says now.{how}</p>{''.join(cards)}</div>"
    )


def _side(title: str, text: str, distance: float | None, target: str | None) -> str:
    e = html.escape
    close = (
        f'<p class="crowd-ba-distance">distance to {e(target)}: <b>{distance:.2f}</b></p>'
        if target and distance is not None
        else ""
    )
    return f'<div class="crowd-ba-side"><h4>{title}</h4><p>{inert(text)}</p>{close}</div>'
