"""What everyone sees: leaderboards, my points and why, the metric per round and group, and
what the last round changed. Read-only; plain data for the UI to render."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from crowd.assess import assess
from crowd.campaigns import may_correct
from crowd.groups import candidate_name, group_name
from crowd.metrics import lower_is_better
from crowd.trust import consensus
from storage import before_after as before_after_store
from storage import boards, queries
from storage import quality as quality_store
from storage import rounds as store
from storage.db import connect
from storage.rows import Campaign


@dataclass(frozen=True)
class LastRound:
    number: int
    improved: bool
    winner_group: str | None  # None when the champion stayed
    metric: str | None
    lower_is_better: bool
    before: list[str]  # the champion's sample replies on the held-out prompts
    after: list[str]  # the winner's


@dataclass(frozen=True)
class ReviewRecord:
    """How a volunteer's corrections fared in review, and how their own reviews agreed."""

    statuses: dict[str, int]  # trust status (crowd.trust.STATUSES) -> their corrections
    reviews: int  # reviews they gave
    decided: int  # of those, on corrections the crowd has a verdict on (trusted or rejected)
    agreed: int  # of those, the ones matching that verdict


def review_record(db_path, participant_id: str, campaign: Campaign) -> ReviewRecord:
    """My corrections in the campaign by trust status under its rule, and my reviews against the
    final consensus (`crowd.trust.consensus`; my own review counts towards it, as for points)."""
    with connect(db_path) as db:
        mine = quality_store.my_corrections(db, participant_id, campaign["id"])
        given = quality_store.my_reviews(db, participant_id, campaign["id"])
        trust = assess(db, campaign)
    statuses = Counter(trust.status(r["id"]) for r in mine)
    verdicts = [consensus(trust.status(cid)) for cid, _ in given]
    decided = [(v, c) for (_, v), c in zip(given, verdicts) if c is not None]
    return ReviewRecord(dict(statuses), len(given), len(decided), sum(v == c for v, c in decided))


def review_stamp(db_path, participant_id: str) -> tuple[int, int]:
    """Changes when my review record may: part of the stamp an open page polls."""
    with connect(db_path) as db:
        return quality_store.review_stamp(db, participant_id)


def leaderboard(db_path, campaign_id: int, limit: int = 20) -> list[dict]:
    with connect(db_path) as db:
        rows = boards.people_board(db, campaign_id, limit)
    return [
        {
            "rank": i + 1,
            "name": r["display_name"],
            "points": round(r["points"], 2),
            "rounds": r["rounds"],
        }
        for i, r in enumerate(rows)
    ]


def group_leaderboard(db_path, campaign_id: int, n_groups: int) -> list[dict]:
    with connect(db_path) as db:
        wins = {r["group_index"]: r["wins"] for r in boards.group_board(db, campaign_id)}
    rows = [{"group": group_name(g), "wins": wins.get(g, 0)} for g in range(n_groups)]
    return sorted(rows, key=lambda r: -r["wins"])


def points_history(db_path, participant_id: str) -> list[dict]:
    """My ledger: round, amount and the reason the rule gave (group rank, share, ...)."""
    with connect(db_path) as db:
        return boards.my_points(db, participant_id)


def metric_history(db_path, campaign_id: int) -> list[dict]:
    """Rows (round, series, value) for a line chart: each group's candidate and the champion."""
    with connect(db_path) as db:
        rows = store.evaluations_of(db, campaign_id)
    return [
        {
            "round": r["round"],
            "value": round(r["value"], 4),
            "metric": r["metric"],
            "series": "champion"
            if r["is_champion"] or (r["group_index"] is None and r["kind"] == "group")
            else candidate_name(r["kind"], r["group_index"]),
        }
        for r in rows
    ]


def last_round(db_path, campaign_id: int) -> LastRound | None:
    with connect(db_path) as db:
        done = boards.finished_rounds(db, campaign_id)
        if not done:
            return None
        latest = done[-1]
        metric_row = store.evaluation(db, latest["id"], latest["champion_id"])
        before = boards.sample_replies(db, latest["id"], latest["champion_id"])
        after = boards.sample_replies(db, latest["id"], latest["winner_id"])
    metric = metric_row["metric"] if metric_row else None
    winner = _winner(latest)
    return LastRound(
        latest["number"],
        bool(latest["improved"]),
        winner,
        metric,
        lower_is_better(metric),
        before,
        after,
    )


@dataclass(frozen=True)
class RoundResult:
    """One round as the organizer reviews it."""

    number: int
    state: str
    winner: str | None  # the crowned candidate's name; None while judging or the champion stayed
    metric: str | None
    lower_is_better: bool
    values: dict[str, float]  # 'champion' and each judged group's name -> the metric
    points: float  # awarded for the round, in total
    people: int  # how many people were awarded any


def _winner(round_: dict) -> str | None:
    """The crowned candidate's name (a group's, or the union's or merge's), None when the
    champion stayed."""
    if not round_["improved"] or round_["winner_kind"] is None:
        return None
    return candidate_name(round_["winner_kind"], round_["winner_group"])


def round_results(db_path, campaign: Campaign) -> list[RoundResult]:
    """Every round of the campaign, oldest first: state, winner, metric per model, points."""
    history = metric_history(db_path, campaign["id"])
    with connect(db_path) as db:
        rounds = store.rounds_of(db, campaign["id"])
        winners = {r["number"]: _winner(r) for r in boards.finished_rounds(db, campaign["id"])}
        paid = boards.points_per_round(db, campaign["id"])
    results = []
    for r in rounds:
        values = {h["series"]: h["value"] for h in history if h["round"] == r["number"]}
        metric = next((h["metric"] for h in history if h["round"] == r["number"]), None)
        winner = winners.get(r["number"]) if r["state"] == "done" else None
        total, people = paid.get(r["number"], (0.0, 0))
        results.append(
            RoundResult(
                r["number"],
                r["state"],
                winner,
                metric,
                lower_is_better(metric),
                values,
                total,
                people,
            )
        )
    return results


def rounds_done(db_path, campaign_id: int) -> int:
    """How many rounds have finished: a cheap stamp for open pages to notice a new result."""
    with connect(db_path) as db:
        return len(boards.finished_rounds(db, campaign_id))


def sign_in_needed(db_path, participant_id: str) -> bool:
    """Whether the active campaign wants a Hugging Face sign-in before this participant (who
    joined without one) may correct; they may still chat."""
    with connect(db_path) as db:
        campaign = store.active_campaign(db)
        person = queries.get_participant(db, participant_id)
    if campaign is None or person is None:
        return False
    return not may_correct(campaign, person)


@dataclass(frozen=True)
class RoundProgress:
    """A closed round on its way to a winner, as the worker's job records it."""

    number: int
    stage: str  # 'waiting for the worker', 'drawing the held-out set', 'training group 2', ...
    groups_done: int  # groups whose candidate is trained (or failed)
    n_groups: int
    eta_s: float | None  # the worker's estimate for the step it is on; None if unknown
    judged: int | None = None  # while judging: models judged so far, of `models`
    models: int | None = None  # the candidates and the champion


STAGES = {
    "closing": "drawing the held-out set",
    "evaluating": "judging the models",
    "before/after replies": "answering your prompts with the new champion",
    "finished": "crowning the winner",
}


def round_progress(db_path, campaign: Campaign) -> RoundProgress | None:
    """The round being trained or judged now, from its latest job (the organizer's jobs table
    reads the same record); None when no round is between closing and done."""
    with connect(db_path) as db:
        busy = [r for r in store.rounds_of(db, campaign["id"]) if r["state"] in STAGES_ORDER]
        if not busy:
            return None
        round_ = busy[-1]
        job = store.last_job_of_round(db, round_["id"])
    progress = json.loads(job["progress"] or "{}") if job else {}
    if job is None or job["status"] == "pending":
        stage = "waiting for the worker"
    else:
        stage = progress.get("stage") or round_["state"]
        stage = STAGES.get(stage, stage)  # the worker's word for it, as a volunteer would say it
    done = progress.get("groups_done", 0)  # candidates the round job has made (crowd.rounds.job)
    if round_["state"] == "evaluating":
        done = campaign["n_groups"]  # groups without enough corrections sat the round out
    judging = round_["state"] == "evaluating" and "models" in progress
    eta = progress.get("eta_s") if round_["state"] == "training" or judging else None
    return RoundProgress(
        round_["number"],
        stage,
        done,
        campaign["n_groups"],
        eta,
        progress.get("judged") if judging else None,
        progress.get("models") if judging else None,
    )


STAGES_ORDER = ("closing", "training", "evaluating")


@dataclass(frozen=True)
class RoundNotice:
    """What the last finished round meant for one volunteer."""

    number: int
    winner_group: str | None  # None: the champion stayed
    my_group: str | None  # None: they did not take part in that round
    points: float
    reasons: list[dict]  # the ledger's reasons for their points that round


def round_notice(db_path, participant_id: str, campaign_id: int) -> RoundNotice | None:
    """The latest finished round: the winner, my group then, my points from it and why."""
    with connect(db_path) as db:
        done = boards.finished_rounds(db, campaign_id)
        if not done:
            return None
        latest = done[-1]
        group = queries.membership(db, latest["id"], participant_id)
        ledger = [r for r in boards.my_points(db, participant_id) if r["round"] == latest["number"]]
    winner = _winner(latest)
    return RoundNotice(
        latest["number"],
        winner,
        group_name(group) if group is not None else None,
        sum(r["amount"] for r in ledger),
        [r["reason"] for r in ledger],
    )


@dataclass(frozen=True)
class BeforeAfter:
    """My own prompts of the last crowning round, answered by the old and the new champion."""

    number: int
    target: str | None  # the emotion the distances are to; None for the preference task
    rows: list[dict]  # prompt, before, after, before_distance, after_distance
    wrote: bool = False  # whether I wrote to the model that round
    preparing: bool = False  # no rows yet, and the round's job is still making them


def before_after(db_path, participant_id: str, campaign: Campaign) -> BeforeAfter | None:
    """For the last finished round, when it crowned a new champion: my prompts' replies as
    stored after the crowning (crowd.rounds.showcase); None otherwise. The round is done before
    they are made, so while its job still runs, no rows means "being prepared"."""
    with connect(db_path) as db:
        done = boards.finished_rounds(db, campaign["id"])
        if not done or not done[-1]["improved"]:
            return None
        round_id = done[-1]["id"]
        rows = before_after_store.before_after_of(db, round_id, participant_id)
        wrote = bool(rows) or before_after_store.wrote_in_round(db, round_id, participant_id)
        job = store.last_job_of_round(db, round_id)
    preparing = not rows and wrote and job is not None and job["status"] in ("pending", "running")
    target = campaign["target_emotion"] if campaign["task"] == "emotion" else None
    return BeforeAfter(done[-1]["number"], target, rows, wrote, preparing)
