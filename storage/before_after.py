"""The before/after table: a round's volunteers' prompts, answered once by the old and the new
champion after crowning (issue 16). Written by the worker, read by every open page."""

from __future__ import annotations

from sqlite_utils import Database


def prompts_of_round(db: Database, round_id: int, per_person: int) -> dict[str, list[str]]:
    """participant id -> their first `per_person` distinct messages to the model that round
    (hidden or banned people excluded), in the order they wrote them."""
    rows = db.execute(
        """SELECT c.participant_id, m.content FROM messages m
           JOIN conversations c ON c.id = m.conversation_id
           JOIN participants p ON p.id = c.participant_id
           WHERE c.round_id = ? AND m.role = 'user'
             AND p.banned_at IS NULL AND p.hidden_at IS NULL
           ORDER BY m.id""",
        [round_id],
    ).fetchall()
    prompts: dict[str, list[str]] = {}
    for participant_id, text in rows:
        mine = prompts.setdefault(participant_id, [])
        if len(mine) < per_person and text not in mine:
            mine.append(text)
    return prompts


def wrote_in_round(db: Database, round_id: int, participant_id: str) -> bool:
    """Whether the participant wrote to the model in the round (a prompt of theirs to show)."""
    row = db.execute(
        """SELECT 1 FROM messages m JOIN conversations c ON c.id = m.conversation_id
           WHERE c.round_id = ? AND c.participant_id = ? AND m.role = 'user' LIMIT 1""",
        [round_id, participant_id],
    )
    return row.fetchone() is not None


def has_before_after(db: Database, round_id: int) -> bool:
    row = db.execute("SELECT 1 FROM before_after WHERE round_id = ? LIMIT 1", [round_id])
    return row.fetchone() is not None


def add_before_after(db: Database, rows: list[dict], now: str) -> None:
    db.table("before_after").insert_all([{**row, "created_at": now} for row in rows])


def before_after_of(db: Database, round_id: int, participant_id: str) -> list[dict]:
    return list(
        db.query(
            "SELECT prompt, before, after, before_distance, after_distance FROM before_after "
            "WHERE round_id = ? AND participant_id = ? ORDER BY id",
            [round_id, participant_id],
        )
    )
