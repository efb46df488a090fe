"""Handlers of the organizer's Data quality tab: thin adapters over `Organizer.quality`,
`hide_person`, `unhide_person`, `ban` and `hide_group` / `ban_group` (a person's voice and
collusion cluster at once). Kept apart from `organizer.py` so that each module stays short; the
page's layout is in `organizer_page.py`."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd

from crowd.limits import Refused
from crowd.organizer import Organizer
from crowd.quality import Agreement, Coverage, QualityReport
from crowd.suspicion import WEIGHTS, ClusterRow, SourceGroup, Suspect
from crowd.ui.components import ConfirmRow, ack, confirm_row, table, warn

if TYPE_CHECKING:  # organizer_trust lays the rings out with this module's columns
    from crowd.ui.organizer_trust import Rings

FAMILY_NAMES = {"emotion": "emotion labels", "choice": "A/B picks", "review": "review verdicts"}
ALPHA_COLUMNS = ["labels", "round", "alpha", "items", "labels given", "note"]
QUEUE_COLUMNS = [
    "name",
    "score",
    *WEIGHTS,
    "agreed / compared",
    "rejected / decided",
    "median gap s",
    "actions",
    "source group",
    "pseudonyms there",
    "gold right / answered",
    "cluster",
    "state",
    "participant",
]
SOURCE_COLUMNS = ["source group", "networks and accounts", "pseudonyms", "names", "cluster"]
CLUSTER_COLUMNS = [
    "cluster",
    "voices",
    "pseudonyms",
    "mutual-endorsement density",
    "endorsements inside",
    "expected by chance",
]
QUEUE_LIMIT = 200
VIEW_OUTPUTS = 5
SCORE_HELP = (
    "**Suspicion score** (0 to 1) = "
    + " + ".join(f"{weight:g} × {name}" for name, weight in WEIGHTS.items())
    + ". Each signal is 0 to 1, and 0 without evidence: disagreement with the majority of the "
    "other voices on the same item (a network's pseudonyms, or a collusion cluster, vote "
    "once); share of their reviewed corrections rejected; wrong answers on gold items; being "
    "in a collusion cluster; pseudonyms sharing their network (1 at 20); pace (1 at ten times "
    "faster than the crowd's median); near-duplicate rewrites; volume (1 at ten times the "
    "median person's). Click a row to fill in its id below."
)


def alpha_frame(rows: list[Agreement]) -> pd.DataFrame:
    return table(
        [
            {
                "labels": FAMILY_NAMES[r.family],
                "round": "all" if r.round is None else r.round,
                "alpha": "—" if r.alpha is None else round(r.alpha, 3),
                "items": r.items,
                "labels given": r.labels,
                "note": r.note,
            }
            for r in rows
        ],
        ALPHA_COLUMNS,
    )


def coverage_text(rows: list[Coverage], min_reviews: int) -> str:
    whole, rounds = rows[0], rows[1:]
    share = f" ({whole.covered / whole.live:.0%})" if whole.live else ""
    per_round = ", ".join(f"round {r.round}: {r.covered}/{r.live}" for r in rounds if r.live)
    return (
        f"**Review coverage**: {whole.covered} of {whole.live} live corrections{share} have at "
        f"least {min_reviews} reviews" + (f" ({per_round})." if per_round else ".")
    )


def queue_frame(suspects: list[Suspect]) -> pd.DataFrame:
    def ratio(a, b) -> str:
        return f"{a}/{b}" if b else "—"

    rows = []
    for s in suspects[:QUEUE_LIMIT]:
        e = s.evidence
        gap = e.get("median_gap_s")
        rows.append(
            {
                "name": s.name,
                "score": s.score,
                **{name: round(value, 2) for name, value in s.signals.items()},
                "agreed / compared": ratio(e.get("agreed"), e.get("compared")),
                "rejected / decided": ratio(e.get("rejected"), e.get("decided")),
                "median gap s": "—" if gap is None else round(float(gap), 1),
                "actions": e.get("actions"),
                "source group": e.get("voice"),
                "pseudonyms there": e.get("pseudonyms"),
                "gold right / answered": ratio(e.get("gold_right"), e.get("gold_answered")),
                "cluster": e.get("cluster") or "—",
                "state": "hidden" if s.hidden else "shown",
                "participant": s.participant_id,
            }
        )
    return table(rows, QUEUE_COLUMNS)


def sources_frame(groups: list[SourceGroup], names: dict[str, str]) -> pd.DataFrame:
    """Voices with more than one pseudonym, or in a cluster: who shares a source."""
    return table(
        [
            {
                "source group": g.voice,
                "networks and accounts": ", ".join(g.sources),
                "pseudonyms": len(g.pseudonyms),
                "names": ", ".join(names.get(p, p[:8]) for p in g.pseudonyms[:12])
                + (" …" if len(g.pseudonyms) > 12 else ""),
                "cluster": g.cluster or "—",
            }
            for g in groups
            if len(g.pseudonyms) > 1 or g.cluster
        ][:QUEUE_LIMIT],
        SOURCE_COLUMNS,
    )


def clusters_frame(rows: list[ClusterRow]) -> pd.DataFrame:
    return table(
        [
            {
                "cluster": r.number,
                "voices": ", ".join(r.voices),
                "pseudonyms": r.pseudonyms,
                "mutual-endorsement density": round(r.density, 2),
                "endorsements inside": r.endorsements,
                "expected by chance": round(r.expected, 1),
            }
            for r in rows
        ],
        CLUSTER_COLUMNS,
    )


class QualityHandlers:
    def __init__(self, organizer: Organizer):
        self.organizer = organizer

    def view(self, key: str | None) -> tuple:
        """(coverage and score help, alpha table, suspicion queue, source groups, clusters)."""
        try:
            report: QualityReport = self.organizer.quality(key)
        except Refused as exc:
            warn(exc)
            return (gr.skip(),) * VIEW_OUTPUTS
        campaign, _ = self.organizer.service.context()
        summary = coverage_text(report.coverage, campaign["min_reviews"] or 2)
        names = {**report.names, **{s.participant_id: s.name for s in report.suspects}}
        return (
            f"{summary}\n\n{SCORE_HELP}",
            alpha_frame(report.agreement),
            queue_frame(report.suspects),
            sources_frame(report.sources, names),
            clusters_frame(report.clusters),
        )

    @staticmethod
    def pick(data: gr.SelectData) -> object:
        """A click on a row of the queue fills the participant box with its id."""
        row = data.row_value or []
        if len(row) != len(QUEUE_COLUMNS):
            return gr.skip()
        return row[QUEUE_COLUMNS.index("participant")]

    def ask(self, action: str):
        """The first click on hide or ban: whom, and what it does. The handler returns
        (confirmation, its question)."""

        def handler(key: str | None, participant_id: str | None, reason: str | None = None):
            try:
                self.organizer.check_key(key)
                pid = (participant_id or "").strip()
                if not pid:
                    raise Refused("Click a row of the queue (or type a participant id) first.")
            except Refused as exc:
                warn(exc)
                return gr.skip(), gr.skip()
            what = {
                "hide": "Hide all the data of",
                "ban": "Ban",
                "hide_group": "Hide all the data of the source group (and collusion cluster) of",
                "ban_group": "Ban the whole source group (and collusion cluster) of",
            }[action]
            effect = (
                "It leaves training, evaluation, points and export until shown again."
                if action.startswith("hide")
                else "They can no longer act, and all their data leaves training, evaluation, "
                "points and export."
            )
            return gr.update(visible=True), f"**{what} {html.escape(pid[:40])}?** {effect}"

        return handler

    def act(self, action: str):
        """A handler that hides, shows again or bans the person whose id is in the box, then
        refreshes the view. Returns (*the view, confirmation: hidden)."""

        def handler(key: str | None, participant_id: str | None, reason: str | None = None):
            try:
                pid = (participant_id or "").strip()
                if not pid:
                    raise Refused("Click a row of the queue (or type a participant id) first.")
                done = self._apply(action, key, pid, (reason or "").strip())
            except Refused as exc:
                warn(exc)
                return (*(gr.skip(),) * VIEW_OUTPUTS, gr.update(visible=False))
            ack(done)
            return (*self.view(key), gr.update(visible=False))

        return handler

    def _apply(self, action: str, key: str | None, pid: str, reason: str) -> str:
        if action == "hide":
            if not self.organizer.hide_person(key, pid):
                raise Refused("That person's data is already hidden.")
            return "Hidden: their data leaves training, evaluation, points and export."
        if action in ("hide_group", "ban_group"):
            act = self.organizer.hide_group if action == "hide_group" else self.organizer.ban_group
            n = act(key, pid, reason or "data quality")
            if not n:
                raise Refused("Everyone in that group is already hidden or banned.")
            verb = "Hidden" if action == "hide_group" else "Banned"
            return f"{verb}: {n} pseudonyms of that source group (and its cluster)."
        if action == "unhide":
            if not self.organizer.unhide_person(key, pid):
                raise Refused("That person's data is not hidden.")
            return "Shown again: their data counts from the next use on."
        if not self.organizer.ban(key, pid, reason or "data quality"):
            raise Refused("That person is already banned.")
        return "Banned: their data leaves training, evaluation, points and export."


@dataclass(frozen=True)
class QualityTab:
    """The Data quality tab's components (`quality_tab`); its rings are
    `crowd.ui.organizer_trust.rings_section`'s."""

    refresh: gr.Button
    summary: gr.Markdown
    alpha: gr.Dataframe
    queue: gr.Dataframe
    participant_id: gr.Textbox
    hide: gr.Button
    unhide: gr.Button
    reason: gr.Textbox
    ban: gr.Button
    confirm_hide: ConfirmRow
    confirm_ban: ConfirmRow


def quality_tab() -> QualityTab:
    gr.Markdown(
        "How far volunteers agree (Krippendorff's alpha: 1 perfect, 0 chance, below 0 "
        "systematic disagreement), how much of their work was reviewed, and who looks like a "
        "troll. Hiding a person takes all of their data out of training, evaluation, points "
        "and export, and can be undone; a ban also stops them from acting."
    )
    refresh = gr.Button("Compute the quality view", elem_id="org-quality")
    summary = gr.Markdown(elem_id="org-quality-summary")
    alpha = gr.Dataframe(
        headers=ALPHA_COLUMNS,
        interactive=False,
        label="Agreement per round (all rounds first)",
        elem_id="org-alpha",
    )
    queue = gr.Dataframe(
        headers=QUEUE_COLUMNS,
        interactive=False,
        label="People, most suspicious first",
        elem_id="org-suspects",
    )
    with gr.Row(equal_height=True):
        participant_id = gr.Textbox(label="Participant id", scale=2, elem_id="org-q-person")
        hide = gr.Button("Hide their data", scale=1, elem_id="org-q-hide")
        unhide = gr.Button("Show it again", scale=1, elem_id="org-q-unhide")
    with gr.Row(equal_height=True):
        reason = gr.Textbox(label="Reason (kept with the ban)", scale=3)
        ban = gr.Button("Ban", variant="stop", scale=1, elem_id="org-q-ban")
    return QualityTab(
        refresh,
        summary,
        alpha,
        queue,
        participant_id,
        hide,
        unhide,
        reason,
        ban,
        confirm_row("org-q-confirm-hide", "Yes, hide their data"),
        confirm_row("org-q-confirm-ban", "Yes, ban them"),
    )


def wire_quality(
    handlers: QualityHandlers,
    key: gr.Textbox,
    q: QualityTab,
    rings: Rings,
    wired: Callable[[Callable], Callable],
) -> None:
    """Wire the tab and its rings; every handler that takes the key goes through `wired` (the
    organizer page's one wrapper: the caller's address for the key's back-off)."""
    view = [q.summary, q.alpha, q.queue, rings.sources, rings.clusters]
    q.refresh.click(wired(handlers.view), [key], view, api_name="organizer_quality")
    q.queue.select(handlers.pick, None, [q.participant_id], api_visibility="private")
    person = [key, q.participant_id, q.reason]
    # (first click, its confirmation, the confirmed action's API name); the Moderation tab's
    # organizer_ban is the API for one person's ban, so this one has none
    actions: dict[str, tuple[gr.Button, ConfirmRow, str | None]] = {
        "hide": (q.hide, q.confirm_hide, "organizer_hide_person"),
        "ban": (q.ban, q.confirm_ban, None),
        "hide_group": (rings.hide_group, rings.confirm_hide_group, "organizer_hide_group"),
        "ban_group": (rings.ban_group, rings.confirm_ban_group, "organizer_ban_group"),
    }
    for action, (button, confirm, api_name) in actions.items():  # asked, done on confirmation
        button.click(
            wired(handlers.ask(action)),
            person,
            [confirm.row, confirm.text],
            api_visibility="private",
        )
        confirm.yes.click(
            wired(handlers.act(action)),
            person,
            [*view, confirm.row],
            api_name=api_name,
            api_visibility="public" if api_name else "private",
        )
    q.unhide.click(
        wired(handlers.act("unhide")),
        [key, q.participant_id],
        [*view, q.confirm_hide.row],
        api_name="organizer_unhide_person",
    )
