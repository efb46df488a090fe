"""Repairs of rows stored before a fix, each run once by the migration that made the fix."""

from __future__ import annotations

import json

from sqlite_utils import Database


def repair_shown_texts(db: Database) -> None:
    """Issue 27 (`m027_shown_texts`): fill `shown` and `other_reply` of the corrections stored
    before they existed, from the history: the old page showed a saved rewrite in place of the
    reply, so a later label, rating or pick of that reply was made on the rewrite, and a later
    turn's prompt held it."""
    db.execute(
        """UPDATE corrections SET other_reply =
           (SELECT content FROM messages WHERE id = corrections.other_message_id)
           WHERE other_message_id IS NOT NULL"""
    )
    history = _RewriteHistory(db)
    for row in db.query(
        """SELECT c.id, c.participant_id, c.created_at, c.original, c.prompt, c.message_id,
                  m.conversation_id, coalesce(a.position, m.position) AS position
           FROM corrections c JOIN messages m ON m.id = c.message_id
           LEFT JOIN messages a ON a.id = m.alternative_of"""
    ):
        _repair(db, history, row)


def _repair(db: Database, history: _RewriteHistory, row: dict) -> None:
    """One correction's `shown` text and, when its turns match what was seen, its prompt."""
    at = (row["participant_id"], row["id"], row["created_at"])
    context = db.execute(
        """SELECT id, role, content FROM messages WHERE conversation_id = ? AND position < ?
           AND alternative_of IS NULL ORDER BY position""",
        [row["conversation_id"], row["position"]],
    ).fetchall()
    seen = [
        {
            "role": role,
            "content": history.shown(mid, content, *at) if role == "assistant" else content,
        }
        for mid, role, content in context
    ]
    prompt = (
        json.dumps(seen, ensure_ascii=False) if _same_turns(row["prompt"], seen) else row["prompt"]
    )
    shown = history.shown(row["message_id"], row["original"], *at)
    db.execute(
        "UPDATE corrections SET shown = ?, prompt = ? WHERE id = ?", [shown, prompt, row["id"]]
    )


class _RewriteHistory:
    """Every rewrite ever stored, to tell what a reply showed when a correction was made."""

    def __init__(self, db: Database):
        self.rewrites: dict[int, list[tuple]] = {}
        for message_id, *rest in db.execute(
            """SELECT message_id, participant_id, id, rewrite, undone_at, replaced_at
               FROM corrections WHERE kind = 'rewrite' ORDER BY id"""
        ):
            self.rewrites.setdefault(message_id, []).append(rest)

    def shown(self, message_id: int, content: str, owner: str, before_id: int, at: str) -> str:
        """The reply's text as its owner's page showed it when correction `before_id` was made
        at `at`: their latest rewrite made before it and not undone or replaced by then, else
        the model's `content`."""
        live = [
            text
            for person, rid, text, undone, replaced in self.rewrites.get(message_id, [])
            if person == owner
            and rid < before_id
            and (undone is None or undone > at)
            and (replaced is None or replaced > at)
        ]
        return live[-1] if live else content


def _same_turns(stored: str, seen: list[dict]) -> bool:
    """Whether a stored prompt has the same turns as `seen` (only then is it repaired)."""
    try:
        old = json.loads(stored)
    except ValueError:
        return False
    return isinstance(old, list) and [m.get("role") for m in old if isinstance(m, dict)] == [
        m["role"] for m in seen
    ]
