"""Read-only queries behind the leaderboards, points history and round history."""

from __future__ import annotations

import json

from sqlite_utils import Database


def people_board(db: Database, campaign_id: int, limit: int = 20) -> list[dict]:
    """Participants by total points (banned and hidden people left out)."""
    return list(
        db.query(
            """SELECT p.id AS participant_id, p.display_name, sum(l.amount) AS points,
                  count(DISTINCT l.round_id) AS rounds
           FROM points l JOIN rounds r ON r.id = l.round_id JOIN participants p ON p.id = l.participant_id
           WHERE r.campaign_id = ? AND p.banned_at IS NULL AND p.hidden_at IS NULL
           GROUP BY p.id ORDER BY points DESC, p.display_name LIMIT ?""",
            [campaign_id, limit],
        )
    )


def group_board(db: Database, campaign_id: int) -> list[dict]:
    """Per group: rounds won (its candidate crowned) and points its members earned."""
    return list(
        db.query(
            """SELECT v.group_index, count(*) AS wins FROM rounds r JOIN model_versions v
           ON v.id = r.winner_id WHERE r.campaign_id = ? AND r.improved = 1 AND v.kind = 'group'
           GROUP BY v.group_index ORDER BY wins DESC""",
            [campaign_id],
        )
    )


def my_points(db: Database, participant_id: str) -> list[dict]:
    """The ledger rows of one participant, newest first, reasons decoded."""
    rows = db.query(
        """SELECT r.number AS round, l.group_index, l.amount, l.rule, l.reason, l.created_at
           FROM points l JOIN rounds r ON r.id = l.round_id WHERE l.participant_id = ?
           ORDER BY l.id DESC""",
        [participant_id],
    )
    return [{**row, "reason": json.loads(row["reason"])} for row in rows]


def points_per_round(db: Database, campaign_id: int) -> dict[int, tuple[float, int]]:
    """Round number -> (points awarded in total, people awarded any)."""
    rows = db.execute(
        """SELECT r.number, sum(l.amount), count(DISTINCT l.participant_id) FROM points l
           JOIN rounds r ON r.id = l.round_id WHERE r.campaign_id = ? GROUP BY r.number""",
        [campaign_id],
    )
    return {number: (total, people) for number, total, people in rows.fetchall()}


def finished_rounds(db: Database, campaign_id: int) -> list[dict]:
    return list(
        db.query(
            """SELECT r.*, v.group_index AS winner_group, v.kind AS winner_kind FROM rounds r
           LEFT JOIN model_versions v ON v.id = r.winner_id
           WHERE r.campaign_id = ? AND r.state = 'done' ORDER BY r.number""",
            [campaign_id],
        )
    )


def sample_replies(db: Database, round_id: int, version_id: int) -> list[str]:
    row = db.execute(
        "SELECT detail FROM evaluations WHERE round_id = ? AND model_version_id = ?",
        [round_id, version_id],
    ).fetchone()
    if row is None or not row[0]:
        return []
    return json.loads(row[0]).get("samples", [])
