"""Reads and writes for peer review: reviews of corrections, review counts, the review queue.
Every function takes an open `Database` (one unit of work); times are ISO-8601 UTC strings."""

from __future__ import annotations

from sqlite_utils import Database

from storage.db import insert
from storage.queries import IN_STANDING, LIVE
from storage.rows import Review, ReviewItem, every, first
from storage.vocabulary import VERDICTS

COUNTED = f"SELECT * FROM reviews WHERE participant_id IN ({IN_STANDING})"
"""SQL: the reviews that count, those by reviewers in good standing (storage.queries.IN_STANDING);
what trust is computed from and what the export counts."""

ENDORSE, REJECT = VERDICTS
COUNTS = (
    f"SELECT correction_id, sum(verdict = '{ENDORSE}') AS endorsements,"
    f" sum(verdict = '{REJECT}') AS rejections FROM ({COUNTED}) GROUP BY correction_id"
)
"""SQL: per correction (`correction_id`), its counted reviews' `endorsements` and `rejections`."""


def add_review(
    db: Database,
    correction_id: int,
    participant_id: str,
    verdict: str,
    round_id: int,
    now: str,
    source: str | None = None,
    deal_id: int | None = None,
) -> int:
    """Store one review; the UNIQUE (correction, reviewer) constraint refuses a second one."""
    return insert(
        db,
        "reviews",
        {
            "correction_id": correction_id,
            "participant_id": participant_id,
            "verdict": verdict,
            "round_id": round_id,
            "created_at": now,
            "source": source,
            "deal_id": deal_id,
        },
    )


def get_review(db: Database, correction_id: int, participant_id: str) -> Review | None:
    rows = db.query(
        "SELECT * FROM reviews WHERE correction_id = ? AND participant_id = ?",
        [correction_id, participant_id],
    )
    return first(Review, rows)


def campaign_reviews(db: Database, campaign_id: int) -> list[tuple[int, str, str, str]]:
    """(correction id, reviewer, author, verdict) of every review of the campaign's corrections
    by reviewers who are not banned or hidden, oldest first: what trust is computed from."""
    return db.execute(
        f"""SELECT r.correction_id, r.participant_id, c.participant_id, r.verdict
            FROM ({COUNTED}) r JOIN corrections c ON c.id = r.correction_id
            WHERE c.round_id IN (SELECT id FROM rounds WHERE campaign_id = ?)
            ORDER BY r.id""",
        [campaign_id],
    ).fetchall()


def reviewable(db: Database, round_ids: list[int], kinds: tuple[str, ...]) -> list[dict]:
    """Live corrections of `kinds` in `round_ids` by authors neither banned nor hidden, and not
    gold (the organizer confirmed them: they are dealt as gold items), oldest first:
    id, participant_id, group_index."""
    marks = ",".join("?" * len(round_ids))
    return list(
        db.query(
            f"""SELECT c.id, c.participant_id, c.group_index FROM corrections c
                WHERE c.round_id IN ({marks}) AND {LIVE}
                  AND c.kind IN ({",".join("?" * len(kinds))})
                  AND NOT EXISTS (SELECT 1 FROM gold g WHERE g.correction_id = c.id)
                ORDER BY c.id""",
            [*round_ids, *kinds],
        )
    )


def reviewers_of(db: Database, round_ids: list[int]) -> list[tuple[int, str, str]]:
    """(correction id, reviewer, verdict) of every review of the corrections of `round_ids`."""
    marks = ",".join("?" * len(round_ids))
    return db.execute(
        f"""SELECT r.correction_id, r.participant_id, r.verdict FROM reviews r
            JOIN corrections c ON c.id = r.correction_id WHERE c.round_id IN ({marks})""",
        round_ids,
    ).fetchall()


def reviews_of(db: Database, correction_id: int) -> list[Review]:
    return every(Review, db.query("SELECT * FROM reviews WHERE correction_id = ?", [correction_id]))


def item(db: Database, correction_id: int) -> ReviewItem | None:
    """A correction as a reviewer sees it (reply B is `other_reply`, as its author saw it), with
    its number of reviews."""
    rows = db.query(
        """SELECT c.*, (SELECT count(*) FROM reviews r WHERE r.correction_id = c.id) AS n_reviews
           FROM corrections c WHERE c.id = ?""",
        [correction_id],
    )
    return first(ReviewItem, rows)


def reviews_given_in(db: Database, round_id: int) -> list[Review]:
    """Reviews given while `round_id` was the current round, by reviewers still in good standing."""
    return every(
        Review,
        db.query(
            f"SELECT * FROM ({COUNTED}) WHERE round_id = ? ORDER BY id",
            [round_id],
        ),
    )
