"""Reads and writes of dealt reviews and gold items: what the server dealt each reviewer
(`deals`), and the items whose right verdict is known (`gold`). Every function takes an open
`Database` (one unit of work); times are ISO-8601 UTC strings."""

from __future__ import annotations

from sqlite_utils import Database

from storage.db import insert

OPEN = "d.answered_at IS NULL AND d.skipped_at IS NULL"


def add_deal(
    db: Database,
    participant_id: str,
    round_id: int,
    now: str,
    correction_id: int | None = None,
    gold_id: int | None = None,
) -> int:
    return insert(
        db,
        "deals",
        {
            "participant_id": participant_id,
            "correction_id": correction_id,
            "gold_id": gold_id,
            "round_id": round_id,
            "dealt_at": now,
        },
    )


def get_deal(db: Database, deal_id: int) -> dict | None:
    rows = list(db.query("SELECT * FROM deals WHERE id = ?", [deal_id]))
    return rows[0] if rows else None


def open_deals(db: Database, participant_id: str) -> list[dict]:
    """The reviewer's deals not yet answered or skipped, oldest first."""
    return list(
        db.query(
            f"SELECT d.* FROM deals d WHERE d.participant_id = ? AND {OPEN} ORDER BY d.id",
            [participant_id],
        )
    )


def dealt_to(db: Database, participant_ids: list[str]) -> tuple[set[int], set[int]]:
    """(correction ids, gold ids) ever dealt to any of these pseudonyms (one voice)."""
    marks = ",".join("?" * len(participant_ids))
    rows = db.execute(
        f"SELECT correction_id, gold_id FROM deals WHERE participant_id IN ({marks})",
        participant_ids,
    ).fetchall()
    return {c for c, _ in rows if c is not None}, {g for _, g in rows if g is not None}


def in_flight(db: Database, round_ids: list[int], since: str) -> list[tuple[int, str]]:
    """(correction id, reviewer) of open deals of corrections in `round_ids` dealt after
    `since`: reviews on their way."""
    marks = ",".join("?" * len(round_ids))
    return db.execute(
        f"""SELECT d.correction_id, d.participant_id FROM deals d
            JOIN corrections c ON c.id = d.correction_id
            WHERE c.round_id IN ({marks}) AND {OPEN} AND d.dealt_at > ?""",
        [*round_ids, since],
    ).fetchall()


def deals_made(db: Database, participant_ids: list[str]) -> int:
    """How many items these pseudonyms (one voice) were dealt in all."""
    marks = ",".join("?" * len(participant_ids))
    return db.execute(
        f"SELECT count(*) FROM deals WHERE participant_id IN ({marks})", participant_ids
    ).fetchone()[0]


def close_deal(db: Database, deal_id: int, now: str, verdict: str | None = None) -> bool:
    """Mark an open deal answered (with a gold item's `verdict`); False if it was not open."""
    cursor = db.execute(
        f"UPDATE deals SET answered_at = ?, verdict = ? WHERE id = ? AND {OPEN.replace('d.', '')}",
        [now, verdict, deal_id],
    )
    return cursor.rowcount == 1


def skip_deal(db: Database, deal_id: int, now: str) -> bool:
    cursor = db.execute(
        f"UPDATE deals SET skipped_at = ? WHERE id = ? AND {OPEN.replace('d.', '')}",
        [now, deal_id],
    )
    return cursor.rowcount == 1


# -- gold ------------------------------------------------------------------------------------


def add_gold(db: Database, campaign_id: int, verdict: str, now: str, **fields) -> int:
    """A gold item: `correction_id=` (an organizer-confirmed correction) or `reference_id=` with
    what it shows (`prompt`, `original`, `rewrite`). A correction confirmed again takes the new
    verdict."""
    row = {"campaign_id": campaign_id, "verdict": verdict, "created_at": now, **fields}
    if fields.get("correction_id") is not None:
        existing = gold_of_correction(db, fields["correction_id"])
        if existing:
            db.execute("UPDATE gold SET verdict = ? WHERE id = ?", [verdict, existing["id"]])
            return existing["id"]
    return insert(db, "gold", row)


def gold_of_correction(db: Database, correction_id: int) -> dict | None:
    rows = list(db.query("SELECT * FROM gold WHERE correction_id = ?", [correction_id]))
    return rows[0] if rows else None


def get_gold(db: Database, gold_id: int) -> dict | None:
    rows = list(db.query("SELECT * FROM gold WHERE id = ?", [gold_id]))
    return rows[0] if rows else None


def gold_items(db: Database, campaign_id: int) -> list[dict]:
    """The campaign's gold items with the author of a confirmed correction (`author`, NULL for
    reference items) and whether that correction is still live."""
    return list(
        db.query(
            """SELECT g.*, c.participant_id AS author,
                      (c.id IS NULL OR (c.undone_at IS NULL AND c.hidden_at IS NULL
                                        AND c.replaced_at IS NULL)) AS live
               FROM gold g LEFT JOIN corrections c ON c.id = g.correction_id
               WHERE g.campaign_id = ? ORDER BY g.id""",
            [campaign_id],
        )
    )


def confirmed(db: Database, campaign_id: int) -> dict[int, str]:
    """correction id -> the verdict the organizer confirmed."""
    return dict(
        db.execute(
            "SELECT correction_id, verdict FROM gold WHERE campaign_id = ? AND correction_id"
            " IS NOT NULL",
            [campaign_id],
        ).fetchall()
    )


def gold_answers(db: Database, campaign_id: int) -> list[tuple[str, bool]]:
    """(reviewer, answered right) for every gold item answered in the campaign, oldest first."""
    return [
        (who, bool(right))
        for who, right in db.execute(
            """SELECT d.participant_id, d.verdict = g.verdict FROM deals d
               JOIN gold g ON g.id = d.gold_id
               WHERE g.campaign_id = ? AND d.verdict IS NOT NULL ORDER BY d.id""",
            [campaign_id],
        )
    ]


def references_without_gold(db: Database, campaign_id: int) -> list[dict]:
    """The campaign's emotion texts and preference pairs not yet turned into gold items."""
    return list(
        db.query(
            """SELECT r.* FROM reference_texts r WHERE r.campaign_id = ?
                 AND r.kind IN ('emotion', 'pair')
                 AND NOT EXISTS (SELECT 1 FROM gold g WHERE g.reference_id = r.id)
               ORDER BY r.id""",
            [campaign_id],
        )
    )


def some_reply(db: Database, campaign_id: int, k: int) -> dict | None:
    """The k-th (modulo their number) model reply of the campaign that follows a user message:
    the reply a reference text is shown as rewriting. None before any reply exists."""
    n = db.execute(
        """SELECT count(*) FROM messages m JOIN conversations v ON v.id = m.conversation_id
           WHERE v.round_id IN (SELECT id FROM rounds WHERE campaign_id = ?)
             AND m.role = 'assistant' AND m.alternative_of IS NULL""",
        [campaign_id],
    ).fetchone()[0]
    if not n:
        return None
    rows = list(
        db.query(
            """SELECT m.* FROM messages m JOIN conversations v ON v.id = m.conversation_id
               WHERE v.round_id IN (SELECT id FROM rounds WHERE campaign_id = ?)
                 AND m.role = 'assistant' AND m.alternative_of IS NULL
               ORDER BY m.id LIMIT 1 OFFSET ?""",
            [campaign_id, k % n],
        )
    )
    return rows[0] if rows else None


def gold_answered(db: Database, gold_id: int) -> int:
    """How many reviewers answered a gold item (what its item shows as its reviews so far)."""
    return db.execute(
        "SELECT count(*) FROM deals WHERE gold_id = ? AND answered_at IS NOT NULL", [gold_id]
    ).fetchone()[0]
