"""The export's read side: a read-only snapshot of the database, the scope of an export, and
every query an export makes, all in one read transaction. The files are written by
storage.export_io; the record shapes live in crowd.export."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from storage import reviews
from storage.queries import LIVE
from storage.rows import Campaign, ExportedCorrection, each, first


class ExportError(ValueError):
    """The export cannot be made as asked; the message says why. Nothing has been written."""


@dataclass(frozen=True)
class Scope:
    """What one export covers: a campaign, some of its rounds and groups, moderated data or not."""

    campaign: Campaign
    round_ids: dict[int, int]  # round id -> round number
    groups: tuple[int, ...] | None  # None = every group
    include_hidden: bool
    include_banned: bool


class Snapshot:
    """A read-only connection inside one read transaction: every query sees the same data."""

    def __init__(self, conn: sqlite3.Connection, salt: str) -> None:
        self.conn = conn
        self._salt = salt
        self._pseudonyms: dict[str, str] = {}

    def rows(self, sql: str, params: tuple | list = ()) -> Iterator[dict[str, Any]]:
        cursor = self.conn.execute(sql, params)
        names = [column[0] for column in cursor.description]
        for values in cursor:
            yield dict(zip(names, values))

    def pseudonym(self, row: Mapping[str, Any]) -> str:
        """A stable-within-this-export pseudonym for `row['participant_id']`."""
        pid = row["participant_id"]
        if pid not in self._pseudonyms:
            digest = hashlib.sha256(f"{self._salt}\x00{pid}".encode()).hexdigest()
            self._pseudonyms[pid] = "p-" + digest[:12]
        return self._pseudonyms[pid]

    def scope(
        self,
        campaign: int | None,
        rounds: list[int] | None,
        groups: list[int] | None,
        include_hidden: bool,
        include_banned: bool,
    ) -> Scope:
        """Check the filters against the database; raise ExportError naming what is unknown."""
        chosen = _campaign(self, campaign)
        known = {
            r["number"]: r["id"]
            for r in self.rows(
                "SELECT id, number FROM rounds WHERE campaign_id = ? ORDER BY number",
                [chosen["id"]],
            )
        }
        unknown = sorted(set(rounds or []) - set(known))
        if unknown:
            have = ", ".join(map(str, known)) or "none yet"
            raise ExportError(
                f"unknown round {unknown[0]} in campaign {chosen['id']} (rounds: {have})"
            )
        wanted = known if rounds is None else {n: known[n] for n in rounds}
        bad = [g for g in groups or [] if not 0 <= g < chosen["n_groups"]]
        if bad:
            last = chosen["n_groups"] - 1
            raise ExportError(f"unknown group {bad[0]}: the campaign has groups 0 to {last}")
        return Scope(
            campaign=chosen,
            round_ids={rid: number for number, rid in wanted.items()},
            groups=None if groups is None else tuple(sorted(set(groups))),
            include_hidden=include_hidden,
            include_banned=include_banned,
        )

    def corrections(self, scope: Scope) -> Iterator[ExportedCorrection]:
        """Corrections in scope with their participant, round number, reply B, counted reviews
        (storage.reviews.COUNTS) and whether they are `live` (storage.queries.LIVE), by id."""
        where, params = _where(scope, "c")
        if not scope.include_hidden:
            where += " AND c.hidden_at IS NULL"
        if not scope.include_banned:  # a hidden person's data is out like a banned one's
            where += " AND p.banned_at IS NULL AND p.hidden_at IS NULL"
        rows = self.rows(
            "SELECT c.*, r.number AS round, r.campaign_id, p.display_name, p.hf_username,"
            " p.share_identity, p.banned_at, p.hidden_at AS person_hidden_at,"
            " coalesce(v.endorsements, 0) AS endorsements, coalesce(v.rejections, 0) AS rejections,"
            f" ({LIVE}) AS live"
            " FROM corrections c JOIN rounds r ON r.id = c.round_id"
            " JOIN participants p ON p.id = c.participant_id"
            f" LEFT JOIN ({reviews.COUNTS}) v ON v.correction_id = c.id"
            f" WHERE {where} ORDER BY c.id",
            params,
        )
        return each(ExportedCorrection, rows)

    def recorded(self, scope: Scope) -> tuple[set[int], set[int]]:
        """(ids of the rounds in scope whose record is written, ids of the corrections any
        round's record says trained or judged): storage.records, read as it was written."""
        ids = list(scope.round_ids)
        marks = ",".join("?" * len(ids))
        rounds = {
            r["round_id"]
            for r in self.rows(
                f"SELECT round_id FROM round_bundles WHERE round_id IN ({marks})", ids
            )
        }
        used = {
            r["correction_id"]
            for r in self.rows(
                "SELECT DISTINCT correction_id FROM round_material WHERE role IN ('train', 'judge')"
            )
        }
        return rounds, used

    def summary(self, scope: Scope, counts: dict[str, int], now: datetime) -> dict[str, Any]:
        """What the dataset card needs: campaign, filters, counts, and the rounds' outcomes."""
        ids = list(scope.round_ids)
        marks = ",".join("?" * len(ids))
        rounds = list(
            self.rows(
                "SELECT r.number, r.state, r.improved, r.opened_at, r.finished_at,"
                " CASE WHEN w.kind = 'group' THEN w.group_index ELSE w.kind END AS winner_group"
                " FROM rounds r"
                " LEFT JOIN model_versions w ON w.id = r.winner_id"
                f" WHERE r.id IN ({marks}) ORDER BY r.number",
                ids,
            )
        )
        return {
            "campaign": scope.campaign,
            "rounds": rounds,
            "groups": scope.groups,
            "include_hidden": scope.include_hidden,
            "include_banned": scope.include_banned,
            "counts": counts,
            "generated_at": now.isoformat(timespec="seconds"),
        }

    def evaluations(self, scope: Scope) -> list[dict[str, Any]]:
        """Every evaluation in scope (the champion's too, whose group is NULL) with its round,
        model status and whether it won."""
        where, params = _where(scope, "e", keep_no_group=True)
        return list(
            self.rows(
                "SELECT r.number AS round, r.id AS round_id, r.state, e.group_index AS 'group',"
                " e.model_version_id, m.status, e.metric, e.value, e.loss, e.n_items,"
                " (e.model_version_id = r.winner_id) AS winner"
                " FROM evaluations e JOIN rounds r ON r.id = e.round_id"
                " JOIN model_versions m ON m.id = e.model_version_id"
                f" WHERE {where}",
                params,
            )
        )

    def round_states(self) -> dict[int, str]:
        """round id -> its state, for every round."""
        return {r["id"]: r["state"] for r in self.rows("SELECT id, state FROM rounds")}

    def points(self, scope: Scope) -> Iterator[dict[str, Any]]:
        """The points ledger in scope, with the round number and the participant's name and
        whether they share it; banned and hidden people's points only when the scope says."""
        where, params = _where(scope, "x")
        if not scope.include_banned:
            where += " AND p.banned_at IS NULL AND p.hidden_at IS NULL"
        return self.rows(
            "SELECT x.*, r.number AS round, p.display_name, p.share_identity FROM points x"
            " JOIN rounds r ON r.id = x.round_id JOIN participants p ON p.id = x.participant_id"
            f" WHERE {where} ORDER BY x.id",
            params,
        )


def _campaign(snap: Snapshot, campaign: int | None) -> Campaign:
    if campaign is None:
        latest = "SELECT * FROM campaigns ORDER BY active DESC, id DESC LIMIT 1"
        found = first(Campaign, snap.rows(latest))
        if found is None:
            raise ExportError("the database holds no campaign yet: nothing to export")
        return found
    found = first(Campaign, snap.rows("SELECT * FROM campaigns WHERE id = ?", [campaign]))
    if found is None:
        raise ExportError(f"unknown campaign {campaign}")
    return found


def _where(scope: Scope, alias: str, keep_no_group: bool = False) -> tuple[str, list[Any]]:
    """SQL condition (and its parameters) on `alias`.round_id and `alias`.group_index;
    `keep_no_group` keeps rows whose group is NULL (the champion's evaluation)."""
    ids = list(scope.round_ids)
    where = f"{alias}.round_id IN ({','.join('?' * len(ids))})" if ids else "0"
    params: list[Any] = list(ids)
    if scope.groups is not None:
        in_groups = f"{alias}.group_index IN ({','.join('?' * len(scope.groups))})"
        if keep_no_group:
            in_groups = f"({in_groups} OR {alias}.group_index IS NULL)"
        where += " AND " + in_groups
        params += list(scope.groups)
    return where, params


@contextmanager
def open_snapshot(db_path: Path, salt: str | None) -> Iterator[Snapshot]:
    """A read-only snapshot of a migrated database; ExportError if it is missing or not ours."""
    from sqlite_utils import Database

    from storage.schema import MIGRATIONS

    if not db_path.is_file():
        raise ExportError(f"no database at {db_path}")
    uri = db_path.resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("BEGIN")  # one read transaction: a consistent view while the app writes
        pending = [m.name for m in MIGRATIONS.pending(Database(conn))]
        if pending:
            raise ExportError(
                f"{db_path} is not a migrated Crowd-SFT database (missing {', '.join(pending)});"
                " start the app on it once to migrate it"
            )
        yield Snapshot(conn, salt if salt is not None else secrets.token_hex(16))
    except sqlite3.DatabaseError as exc:
        raise ExportError(f"cannot read database {db_path}: {exc}") from None
    finally:
        conn.close()
