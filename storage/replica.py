"""A folder replica of the data dir: Litestream streams every commit of the live database into
it, and the adapters and the identity key file are copied there when they appear.

The live database stays on local disk; the replica folder may be a network mount (a storage
bucket), which SQLite itself must never write to. Layout of the folder:

    replica.json     the id of the database this replica belongs to
    db/              Litestream's replica of crowd.db
    adapters/NAME/   a copy of each adapter folder the database names (immutable once written)
    bundles/HASH/    a copy of the bundle of each round not yet done (content-addressed), so a
                     round closed before a restart is trained from its own bundle after it
    identity.key     the identity key file, when the identity comes from it

The app restores from here only when its local database is missing, and replicates into here
only when the folder is empty or belongs to the same database: a replica never overwrites a
local database, and another campaign's replica is never written over.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from pathlib import Path

from storage.backup import DB_NAME, KEY_NAME, open_private
from storage.db import database_id
from storage.restore import adapter_folder

log = logging.getLogger("storage.replica")

MARKER = "replica.json"
FORMAT = "crowd-replica"
DB_FOLDER = "db"
RESTORE_TIMEOUT_S = 600


class ReplicaError(RuntimeError):
    """The replica cannot be used; the message names the folder and says why."""


class FolderReplica:
    def __init__(self, root: Path, binary: str):
        self.root, self.binary = Path(root), binary

    @property
    def db_folder(self) -> Path:
        return self.root / DB_FOLDER

    def check_writable(self) -> None:
        """Create the folder if needed and prove it takes a file, or raise ReplicaError."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise ReplicaError(f"the replica folder {self.root} is not writable: {exc}") from None

    def has_database(self) -> bool:
        """Whether Litestream has written a replica of a database here."""
        return any((self.db_folder / "ltx").rglob("*.ltx")) if self.db_folder.is_dir() else False

    def owner(self) -> str | None:
        """The id of the database this replica belongs to, from its marker; None if unmarked."""
        try:
            marker = json.loads((self.root / MARKER).read_text())
        except (OSError, ValueError):
            return None
        value = marker.get("database_id") if isinstance(marker, dict) else None
        return value if isinstance(value, str) else None

    def claim(self, db_id: str) -> None:
        """Mark the replica as this database's; refuse one holding another database."""
        owner = self.owner()
        if owner == db_id:
            return
        if self.has_database():
            raise ReplicaError(
                f"the replica folder {self.root} holds another database's replica"
                f" ({owner or 'unmarked'}; this one is {db_id}): replication is off. Point the"
                " replica at an empty folder, or move that one aside."
            )
        _write_atomically(self.root / MARKER, json.dumps({"format": FORMAT, "database_id": db_id}))

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
            self._litestream_restore(restored)
            db_id = self._check_restored(restored)
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

    def _litestream_restore(self, out: Path) -> None:
        command = [self.binary, "restore", "-o", str(out), self.db_folder.resolve().as_uri()]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=RESTORE_TIMEOUT_S
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ReplicaError(
                f"cannot run litestream restore from {self.db_folder}: {exc}"
            ) from None
        if done.returncode != 0 or not out.is_file():
            why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ReplicaError(f"the replica in {self.db_folder} cannot be restored: {why[0]}")

    def _check_restored(self, path: Path) -> str:
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
                f"the replica in {self.db_folder} restores a damaged or foreign database ({check})"
            )
        db_id, owner = database_id(path), self.owner()
        if owner is not None and db_id != owner:
            raise ReplicaError(
                f"the replica folder {self.root} is marked for database {owner}"
                f" but its db/ holds {db_id}: it mixes two databases"
            )
        return db_id or ""

    def _fetch_adapters(self, db: Path, staging: Path) -> tuple[list[str], list[str]]:
        found, missing = [], []
        for name in [*adapter_paths(db), *bundle_paths(db)]:
            source = self.root / name
            if source.is_dir() and not source.is_symlink():
                shutil.copytree(source, staging / name, symlinks=True)
                found.append(name)
            else:
                missing.append(name)
        return found, missing

    def _fetch_key(self, staging: Path, data_dir: Path) -> list[str]:
        source = self.root / KEY_NAME
        if not source.is_file() or (data_dir / KEY_NAME).exists():
            return []
        with open_private(staging / KEY_NAME) as sink:
            sink.write(source.read_bytes())
        return [KEY_NAME]

    # -- replicate files -------------------------------------------------------------------

    def copy_adapters(self, db: Path, data_dir: Path) -> list[str]:
        """Copy each adapter folder the database names that the replica lacks; returns them.
        Adapters are immutable once written, so one copy each is enough."""
        copied = []
        for name in [*adapter_paths(db), *bundle_paths(db)]:
            source, target = data_dir / name, self.root / name
            if target.exists() or not source.is_dir():
                continue
            partial = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
            shutil.copytree(source, partial, symlinks=True)
            partial.rename(target)
            copied.append(name)
        return copied

    def save_key(self, key_file: Path) -> None:
        """Keep a copy of the identity key file, so a restore keeps every token valid."""
        data = key_file.read_bytes()
        target = self.root / KEY_NAME
        if not target.is_file() or target.read_bytes() != data:
            _write_atomically(target, data.decode())


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


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    with open_private(partial) as sink:
        sink.write(text.encode())
    partial.replace(path)


def _clear_stale(data_dir: Path) -> None:
    """A missing database's leftovers: its WAL (which SQLite would replay onto the restored
    file) and Litestream's position files for it."""
    for suffix in ("-wal", "-shm", "-journal"):
        (data_dir / (DB_NAME + suffix)).unlink(missing_ok=True)
    shutil.rmtree(data_dir / f".{DB_NAME}-litestream", ignore_errors=True)
