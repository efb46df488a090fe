"""Reads and writes of where actions came from (`sightings`): one row per campaign, pseudonym
and source, with the first and last time and the number of actions. Every function takes an
open `Database` (one unit of work)."""

from __future__ import annotations

from sqlite_utils import Database


def record(db: Database, campaign_id: int, participant_id: str, source: str, now: str) -> None:
    """One action of `participant_id` from `source`."""
    db.execute(
        """INSERT INTO sightings (campaign_id, participant_id, source, first_at, last_at)
           VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (campaign_id, participant_id, source)
           DO UPDATE SET last_at = excluded.last_at, actions = actions + 1""",
        [campaign_id, participant_id, source, now, now],
    )


def sightings(db: Database, campaign_id: int) -> list[tuple[str, str]]:
    """(pseudonym, source) of every pseudonym seen in the campaign, banned ones included (a
    banned puppet still ties its network to the others)."""
    return [
        (pid, source)
        for pid, source in db.execute(
            "SELECT participant_id, source FROM sightings WHERE campaign_id = ? ORDER BY 1, 2",
            [campaign_id],
        )
    ]


def accounts(db: Database, campaign_id: int) -> dict[str, str]:
    """pseudonym -> Hugging Face username, for the signed-in pseudonyms seen in the campaign."""
    return dict(
        db.execute(
            """SELECT p.id, p.hf_username FROM participants p
               WHERE p.hf_username IS NOT NULL AND p.id IN (
                   SELECT participant_id FROM sightings WHERE campaign_id = ?)""",
            [campaign_id],
        ).fetchall()
    )


def names(db: Database, campaign_id: int) -> dict[str, str]:
    """pseudonym -> display name, for everyone seen in the campaign."""
    return dict(
        db.execute(
            """SELECT p.id, p.display_name FROM participants p WHERE p.id IN (
                   SELECT participant_id FROM sightings WHERE campaign_id = ?)""",
            [campaign_id],
        ).fetchall()
    )
