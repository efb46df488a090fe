"""A synthetic crowd of honest volunteers and a few trolls, written into a real database, for
the Data quality tests and benchmark (`bench/quality.py`).

Honest people label a reply with its true emotion (80 %), pick the better reply of a pair
(85 %), write distinct rewrites, review fairly (endorse honest rewrites, reject spam), and act
every 15-90 s. Trolls label at random, pick at random, paste the same spam with small changes,
review against the evidence (70 %), act every 1-4 s and do four times the work.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypedDict, Unpack

from sqlite_utils import Database

from crowd.campaigns import CampaignSpec, create_campaign
from crowd.emotions import GOEMOTIONS_LABELS
from storage import queries
from storage import rounds as store
from storage.reviews import add_review
from storage.rows import must
from storage.vocabulary import Kind

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
WORDS = (
    "thanks kind friend warm glad morning walk sea book rain tea help plan story music light "
    "garden calm bright small new old letter cheer smile weekend journey hope quiet"
).split()
SPAM = "Buy cheap followers now at spam dot example, best deal"


@dataclass(frozen=True)
class Crowd:
    campaign_id: int
    honest: list[str]
    trolls: list[str]
    corrections: int
    reviews: int


class _Clock:
    """Each person's own time line: honest people are slow, trolls fast."""

    def __init__(self, rng: random.Random, trolls: set[str]):
        self.rng, self.trolls = rng, trolls
        self.at: dict[str, datetime] = {}

    def tick(self, person: str) -> str:
        gap = self.rng.uniform(1, 4) if person in self.trolls else self.rng.uniform(15, 90)
        start = self.at.get(person, START + timedelta(seconds=self.rng.uniform(0, 600)))
        self.at[person] = start + timedelta(seconds=gap)
        return self.at[person].isoformat(timespec="seconds")


def seed_crowd(
    db: Database,
    corrections: int,
    n_honest: int,
    n_trolls: int,
    rng: random.Random,
    rounds: int = 2,
) -> Crowd:
    """A campaign (reviews on, 2 reviews needed) with `rounds` rounds and about `corrections`
    corrections (emotion labels, A/B picks and rewrites) plus reviews of the rewrites."""
    spec = CampaignSpec(name="Synthetic crowd", n_groups=3)
    campaign_id = create_campaign(db, spec, None, None, START.isoformat())
    store.update_campaign(db, campaign_id, reviews_on=1, min_reviews=2)
    round_ids = _rounds(db, campaign_id, rounds)
    honest = [f"honest-{i:03d}" for i in range(n_honest)]
    trolls = [f"troll-{i:02d}" for i in range(n_trolls)]
    for person in honest + trolls:
        queries.add_participant(db, person, person.replace("-", " ").title(), START.isoformat())
    # trolls do four times the work: they appear four times in the pool actors are drawn from
    pool = honest + trolls * 4
    clock, counts = _Clock(rng, set(trolls)), [0, 0]
    with db.atomic():
        n_items = max(1, corrections // 6)  # 3 labels + 2 picks + 1 rewrite per item
        for i in range(n_items):
            round_id = round_ids[i * len(round_ids) // n_items]
            _item(db, round_id, pool, set(trolls), clock, rng, counts)
    return Crowd(campaign_id, honest, trolls, counts[0], counts[1])


def _rounds(db: Database, campaign_id: int, rounds: int) -> list[int]:
    first = must(store.current_round(db, campaign_id), "the new campaign's round")
    ids = [first["id"]]
    for number in range(2, rounds + 1):
        ids.append(
            store.add_round(db, campaign_id, number, first["champion_id"], START.isoformat(), None)
        )
    return ids


def _item(
    db: Database,
    round_id: int,
    pool: list[str],
    trolls: set[str],
    clock: _Clock,
    rng: random.Random,
    counts: list[int],
) -> None:
    """One reply with an alternative: 3 emotion labels, 2 A/B picks, 1 rewrite, 2-3 reviews."""
    owner = rng.choice(pool)
    conversation = queries.add_conversation(db, owner, round_id, 0, START.isoformat())
    queries.add_message(db, conversation, "user", "How was your day?", START.isoformat())
    reply = queries.add_message(db, conversation, "assistant", "Fine.", START.isoformat())
    other = queries.add_message(
        db, conversation, "assistant", "Lovely!", START.isoformat(), alternative_of=reply
    )
    truth, better = rng.choice(GOEMOTIONS_LABELS[:6]), rng.choice("ab")
    base = Base(round_id=round_id, group_index=0, message_id=reply, prompt="[]", original="Fine.")
    labellers = _distinct(pool, 5, rng)
    for person in labellers[:3]:
        honest = person not in trolls and rng.random() < 0.8
        emotion = truth if honest else rng.choice(GOEMOTIONS_LABELS)
        _add(db, counts, base, clock, person, kind="emotion", emotion=emotion)
    for person in labellers[3:]:
        honest = person not in trolls and rng.random() < 0.85
        choice = better if honest else rng.choice("ab")
        _add(db, counts, base, clock, person, kind="choice", choice=choice, other_message_id=other)
    spam = owner in trolls
    text = _spam(rng) if spam else " ".join(rng.sample(WORDS, 8)).capitalize() + "."
    rewrite = _add(db, counts, base, clock, owner, kind="rewrite", rewrite=text)
    for person in _distinct([p for p in pool if p != owner], rng.choice((2, 3)), rng):
        fair = "reject" if spam else "endorse"
        if person in trolls and rng.random() < 0.7:
            fair = "endorse" if spam else "reject"
        add_review(db, rewrite, person, fair, round_id, clock.tick(person))
        counts[1] += 1


class Base(TypedDict):
    """What every correction of one `_item` shares (storage.rows.NewCorrection's columns)."""

    round_id: int
    group_index: int
    message_id: int
    prompt: str
    original: str


class Value(TypedDict, total=False):
    """The field of a correction's kind (storage.rows.NewCorrection's columns)."""

    emotion: str
    choice: str
    other_message_id: int
    rewrite: str


def _add(
    db: Database,
    counts: list[int],
    base: Base,
    clock: _Clock,
    person: str,
    kind: Kind,
    **value: Unpack[Value],
) -> int:
    counts[0] += 1
    added = queries.add_correction(
        db, **base, **value, kind=kind, participant_id=person, created_at=clock.tick(person)
    )
    return must(added, "a correction to an open round")  # seed_crowd's rounds are all open


def _distinct(pool: list[str], k: int, rng: random.Random) -> list[str]:
    chosen: list[str] = []
    while len(chosen) < k:
        person = rng.choice(pool)
        if person not in chosen:
            chosen.append(person)
    return chosen


def _spam(rng: random.Random) -> str:
    return f"{SPAM} {rng.randint(1, 9)}{'!' * rng.randint(1, 3)}"
