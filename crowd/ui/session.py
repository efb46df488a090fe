"""Arrival and the live page: consent and join, resuming from the browser's signed token, and
the timer tick that keeps the banner, points, leaderboards and last round's results fresh."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from crowd import views
from crowd.campaigns import not_a_contributor
from crowd.groups import won_text
from crowd.limits import Refused
from crowd.service import CrowdService
from crowd.ui.chat import ChatTab
from crowd.ui.components import (
    ack,
    address_of,
    banner_html,
    hub_orgs,
    ledger_table,
    metric_figure,
    points,
    samples_table,
    table,
    warn,
)
from crowd.ui.journey import JourneyHandlers
from storage.rows import Campaign


@dataclass(frozen=True)
class Boards:
    """Everything under the chat that changes only when a round finishes or points arrive."""

    mine: str
    ledger: object
    people: object
    groups: object
    last: str
    chart: object
    samples: object

    def as_tuple(self) -> tuple:
        return (
            self.mine,
            self.ledger,
            self.people,
            self.groups,
            self.last,
            self.chart,
            self.samples,
        )


N_BOARDS = 7
MAX_STARTERS = 4  # suggested prompts shown in the empty chat (more would push it down)


def screens(joined: bool) -> tuple[dict, dict]:
    """(join screen, main screen) visibility."""
    return gr.update(visible=not joined), gr.update(visible=joined)


SIGN_IN_HOW = (
    "To correct replies, choose **Not you? Forget me in this browser** below, then **Sign in "
    "with Hugging Face** and join again."
)
SIGN_IN_UNAVAILABLE = "Sign-in is not available on this server, so only chatting is open."


class SessionHandlers:
    def __init__(
        self,
        service: CrowdService,
        oauth: bool = False,
        orgs_of: Callable[[dict | None, str | None], list[str]] = hub_orgs,
    ):
        self.service = service
        self.oauth = oauth  # whether this page offers Hugging Face sign-in
        self.orgs_of = orgs_of  # a signed-in person's organisations (the Hub, in production)
        self.proxies = service.settings.trusted_proxies  # whose X-Forwarded-For counts
        self.journey = JourneyHandlers(service)

    def enter(
        self, token: str | None, profile: gr.OAuthProfile | None = None
    ) -> tuple[str | None, ChatTab, dict, dict, str]:
        """On page load: resume a stored identity, or show the terms and the join form.
        Returns (token, tab, join screen, main screen, display name suggestion)."""
        # Only a Hugging Face username is suggested: anything else could overwrite what the
        # visitor has typed while the page loaded.
        suggestion = profile.username if profile is not None else gr.skip()
        if not token:
            # The page opens on the join screen already. Leave it as it is: a visitor who joined
            # while this load was still on its way (a cold server) must not be sent back.
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), suggestion
        try:
            session = self.service.resume(token)
        except Refused as exc:
            warn(exc)  # an edited, forged or banned identity goes back to the join screen
            return None, ChatTab(), *screens(False), suggestion
        return session.token, ChatTab(), *screens(True), gr.skip()

    def join(
        self,
        name: str,
        consent: bool,
        profile: gr.OAuthProfile | None = None,
        oauth_token: gr.OAuthToken | None = None,
        request: gr.Request | None = None,
    ) -> tuple:
        """Consent and join; a signed-in person's organisations are kept for campaigns open to
        one organisation only. Returns (token, tab, join screen, main screen)."""
        try:
            orgs = None
            if profile is not None:
                orgs = self.orgs_of(profile, oauth_token.token if oauth_token else None)
            session = self.service.join(
                name,
                consent is True,
                hf_username=profile.username if profile else None,
                address=address_of(request, self.proxies),
                hf_orgs=orgs,
            )
        except Refused as exc:
            warn(exc)
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        ack(
            f"Welcome, {session.display_name}! You are in group "
            f"{self.service.banner(session.token)['group_name']}."
        )
        return session.token, ChatTab(), *screens(True)

    def sign_in_gate(self, token: str | None) -> tuple[dict, dict]:
        """When the campaign wants a Hugging Face sign-in to correct and this visitor joined
        without one: a notice over the chat and a label button that says so (the service
        refuses their corrections either way). Returns (notice, label button)."""
        try:
            session = self.service.resume(token)
        except Refused:
            return gr.skip(), gr.skip()
        db_path = self.service.settings.db_path
        if not views.sign_in_needed(db_path, session.participant_id):
            return gr.update(visible=False), gr.update(value="Label it")
        how = SIGN_IN_HOW if self.oauth else SIGN_IN_UNAVAILABLE
        campaign, _ = self.service.context()
        notice = f"**{not_a_contributor(campaign)}** You can chat with the model. {how}"
        return gr.update(value=notice, visible=True), gr.update(value="Sign in to label")

    def leave(self) -> tuple:
        """Forget the identity in this browser (the person's data stays, under their pseudonym)."""
        return None, ChatTab(), [], *screens(False)

    # -- the live page -----------------------------------------------------------------------

    def tick(self, token: str | None, stamp: tuple | None, seen: object = None) -> tuple:
        """Every few seconds, one event for everything that follows the rounds, so they agree:
        the banner; the round's news and my before/after cards (journey.news); the boards only
        when a round finished, my points changed or a review of mine (or of my corrections)
        arrived. Returns (banner, (round, my group's name), stamp, news, cards, seen, *boards).
        It never writes the chat: an event writing the chatbot disables its buttons meanwhile."""
        skip = gr.skip()
        try:
            session = self.service.resume(token)
            banner = self.service.banner(token)
        except Refused:
            return (skip,) * (6 + N_BOARDS)  # the next action says why
        campaign, _ = self.service.context()
        now_stamp = (
            views.rounds_done(self.service.settings.db_path, campaign["id"]),
            banner["points"],
            banner["round"],
            *views.review_stamp(self.service.settings.db_path, session.participant_id),
        )
        header = banner_html(session.display_name, banner)
        round_now = (banner["round"], banner["group_name"])
        news = self.journey.news(token, seen)
        if stamp is not None and tuple(stamp) == now_stamp:
            return (header, round_now, skip, *news) + (skip,) * N_BOARDS
        boards = self.boards(session.participant_id, banner["points"], campaign)
        return (header, round_now, now_stamp, *news) + boards.as_tuple()

    def new_round(self, tab: ChatTab, round_now: tuple | None) -> tuple:
        """When the tick sees another round: a fresh chat (the old round's replies can no
        longer be corrected, nor its corrections undone). Returns (chat, tab, ack, undo, A/B
        panel, editor)."""
        skip = gr.skip()
        if not round_now:
            return (skip,) * 6
        number, group = round_now
        if tab.round is None or tab.round == number:
            tab.round = number
            return skip, tab, skip, skip, skip, skip
        ack(f"Round {number} has started: you are in group {group}.")
        hidden = gr.update(visible=False)
        return [], ChatTab(round=number), "", hidden, hidden, hidden

    def starters(self) -> dict:
        """The organizer's suggested prompts, as one-click starters in the empty chat."""
        campaign, _ = self.service.context()
        prompts = json.loads(campaign["prompts"] or "[]")
        return gr.update(examples=[{"text": p} for p in prompts[:MAX_STARTERS]] or None)

    def boards(self, participant_id: str, total: float, campaign: Campaign) -> Boards:
        db_path = self.service.settings.db_path
        ledger = views.points_history(db_path, participant_id)
        reviewed = review_text(views.review_record(db_path, participant_id, campaign))
        mine = (
            f"### Your points: {points(total)}\n"
            + (f"{reviewed}\n\n" if reviewed else "")
            + (
                "Each round your group's model improves, its members earn points; the table says why."
                if not ledger
                else f"From {len({r['round'] for r in ledger})} round(s):"
            )
        )
        people = views.leaderboard(db_path, campaign["id"])
        groups = views.group_leaderboard(db_path, campaign["id"], campaign["n_groups"])
        history = views.metric_history(db_path, campaign["id"])
        last = views.last_round(db_path, campaign["id"])
        return Boards(
            mine=mine,
            ledger=ledger_table(ledger),
            people=table(people, ["rank", "name", "points", "rounds"]),
            groups=table(groups, ["group", "wins"]),
            last=last_round_text(last, history),
            chart=metric_figure(history, last.lower_is_better if last else True),
            samples=samples_table(last.before, last.after) if last else samples_table([], []),
        )


def review_text(record: views.ReviewRecord) -> str:
    """One or two lines: how my corrections fared in review, how my reviews agreed."""
    lines = []
    s = record.statuses
    if s:
        waiting = s.get("unreviewed", 0) + s.get("pending", 0)
        parts = [
            f"{s.get('trusted', 0)} endorsed",
            f"{s.get('rejected', 0)} rejected",
            f"{s.get('contested', 0)} contested",
            f"{waiting} waiting for reviews",
        ]
        lines.append("**Your corrections in review**: " + ", ".join(parts) + ".")
    if record.reviews:
        open_ = record.reviews - record.decided
        agreed = (
            f"{record.agreed} of the {record.decided} decided so far agreed with the final verdict"
            if record.decided
            else "none decided yet"
        )
        lines.append(
            f"**Your reviews**: {record.reviews} given; {agreed}"
            + (f" ({open_} still open)." if open_ and record.decided else ".")
        )
    return "  \n".join(lines)


def last_round_text(last: views.LastRound | None, history: list[dict]) -> str:
    """One paragraph: who won the last finished round and by how much, in the metric's terms."""
    if last is None:
        return (
            "### No round has finished yet\nWhen the organizer closes a round, every group's "
            "model is retrained on its corrections and judged; the winner appears here."
        )
    values = {r["series"]: r["value"] for r in history if r["round"] == last.number}
    direction = "lower is better" if last.lower_is_better else "higher is better"
    metric = f"{last.metric} ({direction})" if last.metric else "the metric"
    if not last.improved or last.winner_group is None:  # no winner recorded: it stayed
        return (
            f"### Round {last.number}: the champion stayed\nNo group's model beat the "
            f"current one on {metric}, so no points this round."
        )
    before, after = values.get("champion"), values.get(last.winner_group)
    if before is None or after is None:
        change = ""
    elif before == after:
        change = f" (tied at {after:.3f}; its lower held-out loss broke the tie)"
    else:
        change = f": {before:.3f} → {after:.3f}"
    return (
        f"### Round {last.number}: {won_text(last.winner_group)}\nIts model beat the "
        f"champion on {metric}{change}, and now serves every group."
    )
