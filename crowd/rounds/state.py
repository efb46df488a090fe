"""The round state machine: open -> closing -> training -> evaluating -> done.

Only these transitions exist, each a compare-and-set in SQLite, so a crashed or doubled worker
can never skip or repeat a stage. Closing a round opens the next one at once (serving the same
champion), so volunteers never wait for training; the winner takes over when crowned.
"""

from __future__ import annotations

import random

from sqlite_utils import Database

from crowd.assess import voices
from crowd.campaigns import open_next_round, parse_time
from crowd.trust import capped
from storage import queries
from storage import rounds as store
from storage.rows import Campaign, Round

STATES = ("open", "closing", "training", "evaluating", "done")
NEXT = {"open": "closing", "closing": "training", "training": "evaluating", "evaluating": "done"}
CLOSE_REASONS = ("organizer", "timer", "count")


class IllegalTransition(RuntimeError):
    """A round was asked to move to a state that does not follow its current one."""


def advance(db: Database, round_id: int, to: str, **fields) -> None:
    """Move a round one legal step forward, or raise IllegalTransition."""
    current = store.get_round(db, round_id)
    if current is None:
        raise IllegalTransition(f"round {round_id} does not exist")
    if NEXT.get(current["state"]) != to or not store.move_round(
        db, round_id, current["state"], to, **fields
    ):
        raise IllegalTransition(f"round {round_id} cannot go from {current['state']} to {to}")


def close_reason(campaign: Campaign, round_: Round, counts: list[int], now: str) -> str | None:
    """Why the round should close now by its policy ('timer', 'count'), or None."""
    if round_["state"] != "open":
        return None
    policy = campaign["round_policy"]
    if (
        policy == "timer"
        and round_["closes_at"]
        and parse_time(now) >= parse_time(round_["closes_at"])
    ):
        return "timer"
    if policy == "count" and campaign["round_corrections"]:
        if counts and min(counts) >= campaign["round_corrections"]:
            return "count"
    return None


def close_round(
    db: Database, campaign: Campaign, round_: Round, by: str, now: str, rng: random.Random
) -> int:
    """Close `round_`, open the next one, queue the round job. Returns the job id."""
    if by not in CLOSE_REASONS:
        raise ValueError(f"unknown close reason {by!r}")
    with db.atomic():
        advance(db, round_["id"], "closing", closed_at=now, closed_by=by)
        open_next_round(db, campaign, round_, now, rng)
        return store.add_job(db, "round", round_["id"], now)


def check_auto_close(db: Database, now: str, rng: random.Random) -> int | None:
    """Close the active campaign's round if its timer ran out or its count was reached."""
    campaign = store.active_campaign(db)
    if campaign is None:
        return None
    round_ = store.current_round(db, campaign["id"])
    if round_ is None:
        return None  # not reached: a campaign is created with its first round
    reason = close_reason(campaign, round_, capped_counts(db, campaign, round_), now)
    if reason is None:
        return None
    try:
        return close_round(db, campaign, round_, reason, now, rng)
    except IllegalTransition:
        return None  # someone else closed it first


def capped_counts(db: Database, campaign: Campaign, round_: Round) -> list[int]:
    """Live corrections per group that count towards the `count` policy: within the
    per-voice cap, so one flooder (or one network's puppets) cannot close a round alone."""
    voice = voices(db, campaign).of
    owners: dict[int, list[str]] = {}
    for group, person, n in queries.group_person_counts(db, round_["id"]):
        owners.setdefault(group, []).extend([voice(person)] * n)
    counts = [0] * campaign["n_groups"]
    for group, people in owners.items():
        if group < len(counts):
            counts[group] = sum(capped(people, campaign["person_cap"]))
    return counts
