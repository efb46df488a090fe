"""The round's record (issue 30): which bundle a round was trained and judged from, and which
corrections it trained, set aside and judged. Written once, when the bundle is written; read by
the points, the export's `used` flag and the model card, which never work it out again."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlite_utils import Database

from storage.rows import RoundRecord

ROLES = ("train", "set_aside", "judge")


def add_record(
    db: Database,
    round_id: int,
    bundle_hash: str,
    path: str,
    verdicts: list[tuple[str, str, str | None]],
    settings: dict[str, Any],
    rows: Iterable[dict[str, Any]],
    now: str,
) -> None:
    """Store round `round_id`'s record; `rows` are round_material rows without the round id.
    Call inside the transaction that writes the bundle's round forward."""
    db.table("round_bundles").insert(
        {
            "round_id": round_id,
            "hash": bundle_hash,
            "path": path,
            "verdicts": json.dumps([list(v) for v in verdicts], ensure_ascii=False),
            "settings": json.dumps(settings, ensure_ascii=False),
            "created_at": now,
        }
    )
    db.table("round_material").insert_all({**row, "round_id": round_id} for row in rows)


def bundle_of(db: Database, round_id: int) -> RoundRecord | None:
    """The round's bundle row (hash, path, verdicts as a list, settings as a dict), or None
    before it is written."""
    row = next(iter(db.query("SELECT * FROM round_bundles WHERE round_id = ?", [round_id])), None)
    if row is None:
        return None
    return RoundRecord(
        round_id=row["round_id"],
        hash=row["hash"],
        path=row["path"],
        verdicts=[
            (who, verdict, consensus) for who, verdict, consensus in json.loads(row["verdicts"])
        ],
        settings=json.loads(row["settings"]),
        created_at=row["created_at"],
    )


def material(db: Database, round_id: int, role: str) -> list[dict]:
    """The round's record rows of one role, oldest correction first."""
    return list(
        db.query(
            "SELECT * FROM round_material WHERE round_id = ? AND role = ? ORDER BY correction_id",
            [round_id, role],
        )
    )


def usage(db: Database, round_id: int) -> dict[str, list[int]]:
    """Per person, [used, not used] of their train-split corrections in the round, as recorded."""
    counts: dict[str, list[int]] = {}
    for person, role, n in db.execute(
        "SELECT participant_id, role, count(*) FROM round_material WHERE round_id = ? "
        "AND role IN ('train', 'set_aside') GROUP BY participant_id, role",
        [round_id],
    ).fetchall():
        counts.setdefault(person, [0, 0])[role == "set_aside"] = n
    return counts


def taught_by(db: Database, round_id: int, groups: set[int] | None) -> list[dict]:
    """The recorded corrections that gave one of `groups` (None: any group) an example in round
    `round_id`'s mode: rows (correction_id, participant_id, group_index)."""
    rows = db.query(
        "SELECT correction_id, participant_id, group_index FROM round_material "
        "WHERE round_id = ? AND role = 'train' AND taught = 1 ORDER BY correction_id",
        [round_id],
    )
    return [r for r in rows if groups is None or r["group_index"] in groups]


# --- the job's runner --------------------------------------------------------------------------


def set_runner(db: Database, job_id: int, **fields: Any) -> None:
    """Record what the runner said about job `job_id` (runner, external_id, flavor,
    runner_stage, running_s, log_tail, failures)."""
    db.table("jobs").update(job_id, fields)


def latest_round_job(db: Database) -> dict | None:
    rows = list(db.query("SELECT * FROM jobs WHERE kind = 'round' ORDER BY id DESC LIMIT 1"))
    return rows[0] if rows else None
