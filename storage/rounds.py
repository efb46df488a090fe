"""Reads and writes for the campaign side: campaigns, rounds, model versions, evaluations,
jobs and the points ledger. One `Database` per unit of work; times are ISO strings."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from storage.db import insert
from storage.queries import LIVE
from storage.rows import Campaign, Correction, Job, RecentJob, Round, Version, every, first


def active_campaign(db: Database) -> Campaign | None:
    return first(
        Campaign, db.query("SELECT * FROM campaigns WHERE active = 1 ORDER BY id DESC LIMIT 1")
    )


def campaign_named(db: Database, name: str) -> Campaign | None:
    return first(
        Campaign, db.query("SELECT * FROM campaigns WHERE name = ? ORDER BY id LIMIT 1", [name])
    )


def get_campaign(db: Database, campaign_id: int) -> Campaign | None:
    return first(Campaign, db.query("SELECT * FROM campaigns WHERE id = ?", [campaign_id]))


def add_campaign(db: Database, now: str, **fields: Any) -> int:
    if isinstance(fields.get("prompts"), list):
        fields["prompts"] = json.dumps(fields["prompts"], ensure_ascii=False)
    db.execute("UPDATE campaigns SET active = 0")
    return insert(db, "campaigns", {**fields, "active": 1, "created_at": now})


def update_campaign(db: Database, campaign_id: int, **fields: Any) -> None:
    if isinstance(fields.get("prompts"), list):
        fields["prompts"] = json.dumps(fields["prompts"], ensure_ascii=False)
    db.table("campaigns").update(campaign_id, fields)


def add_version(
    db: Database,
    campaign_id: int,
    now: str,
    *,
    adapter_path: str | None,
    status: str,
    round_id: int | None = None,
    group_index: int | None = None,
    parent_id: int | None = None,
    kind: str = "group",
    sources: list[int] | None = None,
) -> int:
    return insert(
        db,
        "model_versions",
        {
            "campaign_id": campaign_id,
            "round_id": round_id,
            "group_index": group_index,
            "parent_id": parent_id,
            "adapter_path": adapter_path,
            "status": status,
            "kind": kind,
            "sources": None if sources is None else json.dumps(sources),
            "created_at": now,
        },
    )


def get_version(db: Database, version_id: int) -> Version | None:
    return first(Version, db.query("SELECT * FROM model_versions WHERE id = ?", [version_id]))


def candidate_for(db: Database, round_id: int, group: int) -> Version | None:
    return first(
        Version,
        db.query(
            "SELECT * FROM model_versions WHERE round_id = ? AND group_index = ? "
            "AND kind = 'group' ORDER BY id DESC LIMIT 1",
            [round_id, group],
        ),
    )


def candidate_of(
    db: Database, round_id: int, kind: str, group: int | None = None
) -> Version | None:
    """The round's latest candidate of `kind` ('group' with its `group`, 'union', 'merged')."""
    if kind == "group":
        return candidate_for(db, round_id, group if group is not None else -1)
    return first(
        Version,
        db.query(
            "SELECT * FROM model_versions WHERE round_id = ? AND kind = ? ORDER BY id DESC LIMIT 1",
            [round_id, kind],
        ),
    )


def round_versions(db: Database, round_id: int) -> list[Version]:
    """Every model version a round made (its candidates of every kind), oldest first."""
    return every(
        Version, db.query("SELECT * FROM model_versions WHERE round_id = ? ORDER BY id", [round_id])
    )


def add_round_notes(db: Database, round_id: int, notes: list[str]) -> None:
    """Append `notes` to the round's notes, each once (a resumed job says them again)."""
    row = db.execute("SELECT notes FROM rounds WHERE id = ?", [round_id]).fetchone()
    if row is None:
        raise ValueError(f"no round {round_id} to add notes to")
    known = json.loads(row[0] or "[]")
    new = [n for n in notes if n not in known]
    if new:
        db.execute(
            "UPDATE rounds SET notes = ? WHERE id = ?",
            [json.dumps(known + new, ensure_ascii=False), round_id],
        )


def set_version_status(
    db: Database, version_id: int, status: str, error: str | None = None
) -> None:
    db.table("model_versions").update(version_id, {"status": status, "error": error})


def current_round(db: Database, campaign_id: int) -> Round | None:
    return first(
        Round,
        db.query(
            "SELECT * FROM rounds WHERE campaign_id = ? ORDER BY number DESC LIMIT 1", [campaign_id]
        ),
    )


def get_round(db: Database, round_id: int) -> Round | None:
    return first(Round, db.query("SELECT * FROM rounds WHERE id = ?", [round_id]))


def add_round(
    db: Database, campaign_id: int, number: int, champion_id: int, now: str, closes_at: str | None
) -> int:
    return insert(
        db,
        "rounds",
        {
            "campaign_id": campaign_id,
            "number": number,
            "state": "open",
            "champion_id": champion_id,
            "opened_at": now,
            "closes_at": closes_at,
        },
    )


def move_round(db: Database, round_id: int, old: str, new: str, **fields: Any) -> bool:
    """Compare-and-set: move from `old` to `new` only if the round is still in `old`."""
    sets = ", ".join(["state = ?"] + [f"{key} = ?" for key in fields])
    cursor = db.execute(
        f"UPDATE rounds SET {sets} WHERE id = ? AND state = ?",
        [new, *fields.values(), round_id, old],
    )
    return cursor.rowcount == 1


def set_round_champion(db: Database, round_id: int, version_id: int) -> None:
    db.execute("UPDATE rounds SET champion_id = ? WHERE id = ?", [version_id, round_id])


def rounds_of(db: Database, campaign_id: int) -> list[Round]:
    return every(
        Round, db.query("SELECT * FROM rounds WHERE campaign_id = ? ORDER BY number", [campaign_id])
    )


def round_corrections(db: Database, round_id: int) -> list[Correction]:
    """Live corrections of a round, oldest first."""
    return every(
        Correction,
        db.query(
            f"""SELECT c.* FROM corrections c
            WHERE c.round_id = ? AND {LIVE} ORDER BY c.id""",
            [round_id],
        ),
    )


def set_split(db: Database, correction_ids: list[int], split: str) -> None:
    for start in range(0, len(correction_ids), 500):
        chunk = correction_ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        db.execute(f"UPDATE corrections SET split = ? WHERE id IN ({marks})", [split, *chunk])


def heldout_corrections(db: Database, campaign_id: int, up_to_round: int) -> list[Correction]:
    """Every live held-out correction of the campaign up to and including `up_to_round`."""
    return every(
        Correction,
        db.query(
            f"""SELECT c.* FROM corrections c JOIN rounds r ON r.id = c.round_id
            WHERE r.campaign_id = ? AND r.number <= ? AND c.split = 'heldout' AND {LIVE}
            ORDER BY c.id""",
            [campaign_id, up_to_round],
        ),
    )


def reference_texts(db: Database, campaign_id: int, kind: str) -> list[dict]:
    return list(
        db.query(
            "SELECT * FROM reference_texts WHERE campaign_id = ? AND kind = ?", [campaign_id, kind]
        )
    )


def add_reference_texts(db: Database, campaign_id: int, rows: list[dict], now: str) -> int:
    db.table("reference_texts").insert_all(
        {**row, "campaign_id": campaign_id, "created_at": now} for row in rows
    )
    return len(rows)


def reference_counts(db: Database, campaign_id: int) -> list[dict]:
    """Rows {kind, label, n}: how many reference rows the campaign has per kind and label."""
    return list(
        db.query(
            "SELECT kind, label, count(*) AS n FROM reference_texts "
            "WHERE campaign_id = ? GROUP BY kind, label ORDER BY kind, n DESC",
            [campaign_id],
        )
    )


def evaluation(db: Database, round_id: int, version_id: int) -> dict[str, Any] | None:
    rows = db.query(
        "SELECT * FROM evaluations WHERE round_id = ? AND model_version_id = ?",
        [round_id, version_id],
    )
    return next(iter(rows), None)


def round_evaluations(db: Database, round_id: int) -> list[dict]:
    return list(db.query("SELECT * FROM evaluations WHERE round_id = ? ORDER BY id", [round_id]))


def add_evaluation(db: Database, now: str, **fields: Any) -> None:
    if not isinstance(fields.get("detail"), (str, type(None))):
        fields["detail"] = json.dumps(fields["detail"], ensure_ascii=False)
    db.table("evaluations").insert({**fields, "created_at": now}, replace=True)


def evaluations_of(db: Database, campaign_id: int) -> list[dict]:
    return list(
        db.query(
            """SELECT r.number AS round, e.group_index, e.metric, e.value, e.loss, e.n_items,
                  e.model_version_id, v.status, v.kind,
                  e.model_version_id = r.champion_id AS is_champion
           FROM evaluations e JOIN rounds r ON r.id = e.round_id
           JOIN model_versions v ON v.id = e.model_version_id
           WHERE r.campaign_id = ? ORDER BY r.number, e.group_index""",
            [campaign_id],
        )
    )


def add_points(db: Database, rows: list[dict], now: str) -> None:
    db.table("points").insert_all(
        {**row, "reason": json.dumps(row["reason"], ensure_ascii=False), "created_at": now}
        for row in rows
    )


def points_for_round(db: Database, round_id: int) -> list[dict]:
    return list(db.query("SELECT * FROM points WHERE round_id = ? ORDER BY id", [round_id]))


def points_totals(db: Database, campaign_id: int) -> dict[str, float]:
    rows = db.execute(
        """SELECT p.participant_id, sum(p.amount) FROM points p JOIN rounds r ON r.id = p.round_id
           WHERE r.campaign_id = ? GROUP BY p.participant_id""",
        [campaign_id],
    )
    return {pid: total for pid, total in rows.fetchall()}


# Jobs: a queue in a table (status pending -> running -> finished | failed | cancelled).


def add_job(db: Database, kind: str, round_id: int, now: str) -> int:
    return insert(
        db, "jobs", {"kind": kind, "round_id": round_id, "status": "pending", "created_at": now}
    )


def claim_job(db: Database, now: str) -> Job | None:
    """Take the oldest pending job and mark it running, atomically."""
    with db.atomic():
        pending = db.execute(
            "SELECT id FROM jobs WHERE status = 'pending' ORDER BY id LIMIT 1"
        ).fetchone()
        if pending is None:
            return None
        db.execute(
            "UPDATE jobs SET status = 'running', started_at = ?, heartbeat_at = ?, "
            "attempts = attempts + 1 WHERE id = ?",
            [now, now, pending[0]],
        )
    return get_job(db, pending[0])


def get_job(db: Database, job_id: int) -> Job | None:
    return first(Job, db.query("SELECT * FROM jobs WHERE id = ?", [job_id]))


def last_job_of_round(db: Database, round_id: int) -> Job | None:
    return first(
        Job, db.query("SELECT * FROM jobs WHERE round_id = ? ORDER BY id DESC LIMIT 1", [round_id])
    )


def job_status(db: Database, job_id: int) -> str | None:
    row = db.execute("SELECT status FROM jobs WHERE id = ?", [job_id]).fetchone()
    return None if row is None else row[0]


def update_job(db: Database, job_id: int, now: str, **fields: Any) -> None:
    if "progress" in fields and not isinstance(fields["progress"], str):
        fields["progress"] = json.dumps(fields["progress"])
    db.table("jobs").update(job_id, {**fields, "heartbeat_at": now})


def requeue_running_jobs(db: Database) -> int:
    """After a restart, jobs left 'running' by a dead worker go back to the queue."""
    return db.execute("UPDATE jobs SET status = 'pending' WHERE status = 'running'").rowcount


def cancel_job(db: Database, job_id: int, now: str) -> bool:
    cursor = db.execute(
        "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ? "
        "AND status IN ('pending', 'running')",
        [now, job_id],
    )
    return cursor.rowcount == 1


def recent_jobs(db: Database, limit: int = 20) -> list[RecentJob]:
    """The latest jobs, newest first, each with its round's number and notes (JSON list)."""
    return every(
        RecentJob,
        db.query(
            "SELECT j.*, r.notes AS notes, r.number AS round_number FROM jobs j "
            "LEFT JOIN rounds r ON r.id = j.round_id "
            "ORDER BY j.id DESC LIMIT ?",
            [limit],
        ),
    )


def emotion_labels(db: Database, campaign_id: int) -> list[tuple[str, str]]:
    """(text labelled, label) for every live emotion label of the campaign: the reply as the
    labeller saw it (`shown`), as crowd/lessons.py says a label applies to."""
    return db.execute(
        f"""SELECT c.shown, c.emotion FROM corrections c JOIN rounds r ON r.id = c.round_id
            WHERE r.campaign_id = ? AND c.kind = 'emotion' AND {LIVE} ORDER BY c.id""",
        [campaign_id],
    ).fetchall()
