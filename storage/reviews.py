"""Reads and writes for peer review: reviews of corrections, review counts, the review queue.
Every function takes an open `Database` (one unit of work); times are ISO-8601 UTC strings."""

from __future__ import annotations

from sqlite_utils import Database

from storage.queries import LIVE


def add_review(
    db: Database, correction_id: int, participant_id: str, verdict: str, round_id: int, now: str
) -> int:
    """Store one review; the UNIQUE (correction, reviewer) constraint refuses a second one."""
    return (
        db.table("reviews")
        .insert(
            {
                "correction_id": correction_id,
                "participant_id": participant_id,
                "verdict": verdict,
                "round_id": round_id,
                "created_at": now,
            }
        )
        .last_pk
    )


def get_review(db: Database, correction_id: int, participant_id: str) -> dict | None:
    rows = db.query(
        "SELECT * FROM reviews WHERE correction_id = ? AND participant_id = ?",
        [correction_id, participant_id],
    )
    return next(iter(rows), None)


def review_counts(db: Database, correction_ids: list[int]) -> dict[int, tuple[int, int]]:
    """(endorsements, rejections) per correction id, by reviewers who are not banned or hidden;
    ids without reviews are absent."""
    counts: dict[int, tuple[int, int]] = {}
    for start in range(0, len(correction_ids), 500):
        chunk = correction_ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for cid, endorse, reject in db.execute(
            f"""SELECT r.correction_id, sum(r.verdict = 'endorse'), sum(r.verdict = 'reject')
                FROM reviews r JOIN participants p ON p.id = r.participant_id
                WHERE r.correction_id IN ({marks}) AND p.banned_at IS NULL AND p.hidden_at IS NULL
                GROUP BY r.correction_id""",
            chunk,
        ):
            counts[cid] = (int(endorse), int(reject))
    return counts


def reviewable(
    db: Database, round_ids: list[int], reviewer: str, limit: int, kinds: tuple[str, ...]
) -> list[dict]:
    """Live corrections of `kinds` in `round_ids` that `reviewer` did not write and has not reviewed,
    fewest reviews first, then spread over groups (round-robin by group), oldest first."""
    marks = ",".join("?" * len(round_ids))
    return list(
        db.query(
            f"""SELECT c.*,
                   (SELECT count(*) FROM reviews r WHERE r.correction_id = c.id) AS n_reviews,
                   row_number() OVER (PARTITION BY c.group_index ORDER BY c.id) AS in_group
                FROM corrections c
                WHERE c.round_id IN ({marks}) AND {LIVE} AND c.participant_id != ?
                  AND c.kind IN ({",".join("?" * len(kinds))})
                  AND NOT EXISTS (SELECT 1 FROM reviews r
                                  WHERE r.correction_id = c.id AND r.participant_id = ?)
                ORDER BY n_reviews, in_group, c.group_index, c.id
                LIMIT ?""",
            [*round_ids, reviewer, *kinds, reviewer, limit],
        )
    )


def reviews_given_in(db: Database, round_id: int) -> list[dict]:
    """Reviews given while `round_id` was the current round, by reviewers still in good standing."""
    return list(
        db.query(
            """SELECT r.* FROM reviews r JOIN participants p ON p.id = r.participant_id
               WHERE r.round_id = ? AND p.banned_at IS NULL AND p.hidden_at IS NULL ORDER BY r.id""",
            [round_id],
        )
    )
