"""A replica of the data dir, in a folder or an S3 bucket (`storage.replica_store`): Litestream
streams every commit of the live database into it, and the adapters and the identity key file
are copied there when they appear.

The live database stays on local disk; the replica may be a network mount or an object store,
which SQLite itself must never write to. Layout under the replica's root:

    replica.json     the id of the database this replica belongs to
    db/              Litestream's replica of crowd.db
    adapters/NAME/   a copy of each adapter folder the database names (immutable once written)
    bundles/HASH/    a copy of the bundle of each round not yet done (content-addressed), so a
                     round closed before a restart is trained from its own bundle after it
    identity.key     the identity key file, when the identity comes from it

The rules that keep data safe:
- the app restores from here only when its local database is missing, and a replica never
  overwrites a local database;
- it replicates into here only when the replica is empty or marked as this database's;
  another database's replica is never written over;
- the marker and the key file are written only once the replica holds the database, so a
  replica with a marker or a key but no database is damaged, never merely new: a start without
  a local database refuses it rather than starting empty over it;
- a key file in the replica is never replaced by a different one.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

from storage.backup import DB_NAME, KEY_NAME, open_private
from storage.db import database_id
from storage.replica_store import (
    LtxFile,
    ReplicaConflict,
    ReplicaError,
    ReplicaStore,
)
from storage.restore import adapter_folder

log = logging.getLogger("storage.replica")

MARKER = "replica.json"
FORMAT = "crowd-replica"
DB_FOLDER = "db"
RESTORE_TIMEOUT_S = 600

__all__ = ["Replica", "ReplicaConflict", "ReplicaError", "adapter_paths"]


class Replica:
    def __init__(self, store: ReplicaStore, binary: str):
        self.store, self.binary = store, binary

    @property
    def where(self) -> str:
        return self.store.where

    def check_writable(self) -> None:
        self.store.check_writable()

    def ltx_files(self) -> list[LtxFile]:
        return self.store.ltx_files(DB_FOLDER)

    def has_database(self) -> bool:
        """Whether Litestream has written a replica of a database here."""
        return bool(self.ltx_files())

    def owner(self) -> str | None:
        """The id of the database this replica belongs to, from its marker; None if unmarked."""
        try:
            marker = json.loads(self.store.read_bytes(MARKER) or b"null")
        except ValueError:
            return None
        value = marker.get("database_id") if isinstance(marker, dict) else None
        return value if isinstance(value, str) else None

    def leftovers(self) -> list[str]:
        """What a replica holds besides a database: its marker, the key file."""
        return [name for name in (MARKER, KEY_NAME) if self.store.read_bytes(name) is not None]

    def check_ours(self, db_id: str) -> None:
        """ReplicaConflict unless this replica is empty or marked as `db_id`'s."""
        owner = self.owner()
        if owner == db_id:
            return
        if owner is not None:
            raise ReplicaConflict(
                f"the replica {self.where} belongs to another database ({owner}; this one is"
                f" {db_id}); point CROWD_REPLICA at a new, empty replica"
            )
        held = (["a database"] if self.has_database() else []) + self.leftovers()
        if held:
            raise ReplicaConflict(
                f"the replica {self.where} is unmarked but holds {' and '.join(held)}: it is not"
                " this database's; point CROWD_REPLICA at a new, empty replica, or move that one"
                " aside"
            )

    def mark(self, db_id: str) -> None:
        """Mark the replica as `db_id`'s (once it holds that database)."""
        if self.owner() != db_id:
            body = json.dumps({"format": FORMAT, "database_id": db_id})
            self.store.write_bytes(MARKER, body.encode())

    # -- restore ---------------------------------------------------------------------------

    def restore_into(self, data_dir: Path) -> dict:
        """Bring the replica's database, the adapters it names and the key file into
        `data_dir`, which must have no database. Returns what was restored."""
        if (data_dir / DB_NAME).exists():
            raise ReplicaError(f"{data_dir / DB_NAME} exists: a replica never overwrites it")
        data_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".replica-restore-", dir=data_dir))
        try:
            restored = staging / DB_NAME
            self.restore_database(restored)
            db_id = self.check_restored(restored)
            adapters, missing = self._fetch_adapters(restored, staging)
            key = self._fetch_key(staging, data_dir)
            _clear_stale(data_dir)
            for name in [*adapters, *key, DB_NAME]:  # the database last: it names the others
                if not (data_dir / name).exists():
                    (data_dir / name).parent.mkdir(parents=True, exist_ok=True)
                    (staging / name).rename(data_dir / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return {
            "database_id": db_id,
            "adapters": adapters,
            "missing_adapters": missing,
            "key_file": bool(key),
        }

    def restore_database(self, out: Path, timeout_s: float = RESTORE_TIMEOUT_S) -> None:
        """`litestream restore` of the replica's database into the new file `out`."""
        import os

        command = [self.binary, "restore", "-o", str(out), self.store.litestream_url(DB_FOLDER)]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env=self.store.litestream_env(os.environ),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ReplicaError(f"cannot run litestream restore from {self.where}: {exc}") from None
        if done.returncode != 0 or not out.is_file():
            why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ReplicaError(f"the replica {self.where} cannot be restored: {why[0][:300]}")

    def check_restored(self, path: Path) -> str:
        """The restored database's id, once it proves intact, ours and this replica's."""
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                check = conn.execute("PRAGMA integrity_check").fetchone()[0]
                conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            check = str(exc)
        if check != "ok":
            raise ReplicaError(
                f"the replica {self.where} restores a damaged or foreign database ({check})"
            )
        db_id, owner = database_id(path), self.owner()
        if owner is not None and db_id != owner:
            raise ReplicaError(
                f"the replica {self.where} is marked for database {owner}"
                f" but its db/ holds {db_id}: it mixes two databases"
            )
        return db_id or ""

    def _fetch_adapters(self, db: Path, staging: Path) -> tuple[list[str], list[str]]:
        found: list[str] = []
        missing: list[str] = []
        for name in [*adapter_paths(db), *bundle_paths(db)]:
            (found if self.store.get_folder(name, staging / name) else missing).append(name)
        return found, missing

    def _fetch_key(self, staging: Path, data_dir: Path) -> list[str]:
        data = self.store.read_bytes(KEY_NAME)
        if data is None or (data_dir / KEY_NAME).exists():
            return []
        with open_private(staging / KEY_NAME) as sink:
            sink.write(data)
        return [KEY_NAME]

    # -- replicate files -------------------------------------------------------------------

    def copy_adapters(self, db: Path, data_dir: Path, known: set[str]) -> list[str]:
        """Copy each adapter folder the database names that the replica lacks; returns them.
        Adapters are immutable once written, so one copy each is enough; `known` collects
        those already in the replica, so each is looked up there once."""
        copied = []
        for name in [*adapter_paths(db), *bundle_paths(db)]:
            source = data_dir / name
            if name in known or not source.is_dir():
                continue
            if not self.store.has_folder(name):
                self.store.put_folder(source, name)
                copied.append(name)
            known.add(name)
        return copied

    def save_key(self, key_file: Path) -> None:
        """Keep a copy of the identity key file, so a restore keeps every token valid. A
        different key already there is never replaced: old tokens may still need it."""
        data = key_file.read_bytes()
        there = self.store.read_bytes(KEY_NAME)
        if there is None:
            self.store.write_bytes(KEY_NAME, data)
        elif there != data:
            raise ReplicaConflict(
                f"the replica {self.where} holds another identity.key than the data dir's;"
                " it is left as it is (tokens signed with it would stop working)"
            )


def adapter_paths(db: Path) -> list[str]:
    """The adapter folders a database names that are safely inside `adapters/`."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT DISTINCT adapter_path FROM model_versions WHERE adapter_path IS NOT NULL"
        ).fetchall()
    except sqlite3.DatabaseError:
        return []
    finally:
        conn.close()
    return sorted(p for (p,) in rows if adapter_folder(p) == p)


def bundle_paths(db: Path) -> list[str]:
    """The bundle folders (`bundles/<hash>`) of the rounds a database has not finished yet."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT b.path FROM round_bundles b JOIN rounds r ON r.id = b.round_id"
            " WHERE r.state != 'done'"
        ).fetchall()
    except sqlite3.DatabaseError:  # a database from before round bundles
        return []
    finally:
        conn.close()
    return sorted(p for (p,) in rows if re.fullmatch(r"bundles/[0-9a-f]{64}", p or ""))


def _clear_stale(data_dir: Path) -> None:
    """A missing database's leftovers: its WAL (which SQLite would replay onto the restored
    file) and Litestream's position files for it."""
    for suffix in ("-wal", "-shm", "-journal"):
        (data_dir / (DB_NAME + suffix)).unlink(missing_ok=True)
    shutil.rmtree(data_dir / f".{DB_NAME}-litestream", ignore_errors=True)
