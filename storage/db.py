"""Opening the database: one connection per unit of work, WAL, foreign keys on."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from storage.schema import MIGRATIONS

BUSY_TIMEOUT_MS = 10_000


class StorageError(RuntimeError):
    """The database cannot be opened or migrated; the message names the file."""


def open_db(path: Path | str) -> Database:
    """A new connection to the database at `path`, with WAL and foreign keys on.

    The caller owns the connection and closes it (see `connect`). Gradio runs handlers on
    worker threads, so connections are never shared between units of work.
    """
    path = Path(path)
    try:
        _create_private(path)
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
        db = Database(conn, execute_plugins=False)
        db.execute("PRAGMA foreign_keys = ON")
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.enable_wal()
        # FULL: a commit survives a power cut, not only a crash; writes are few, and losing a
        # correction a volunteer saw acknowledged is not acceptable.
        db.execute("PRAGMA synchronous = FULL")
    except (sqlite3.DatabaseError, OSError) as exc:
        raise StorageError(f"cannot open database {path}: {exc}") from exc
    return db


def _create_private(path: Path) -> None:
    """Create a missing database file with mode 0600; SQLite gives its -wal and -shm files the
    database file's mode."""
    if str(path) != ":memory:" and not path.exists() and path.parent.is_dir():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


@contextmanager
def connect(path: Path | str) -> Iterator[Database]:
    """One unit of work: open, yield, close. Multi-row writes go inside `db.atomic()`."""
    db = open_db(path)
    try:
        yield db
    finally:
        db.close()


@contextmanager
def transaction(path: Path | str) -> Iterator[Database]:
    """One unit of work as one write transaction. BEGIN IMMEDIATE takes SQLite's write lock
    before the first read, so what the checks read cannot change before the writes commit;
    an exception rolls everything back."""
    with connect(path) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.conn.rollback()
            raise
        db.conn.commit()


def migrate(path: Path | str) -> None:
    """Create or upgrade the schema at `path`; a failed migration leaves the file unchanged."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the data directory {path.parent}: {exc}") from exc
    with connect(path) as db:
        try:
            MIGRATIONS.apply(db)
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot migrate database {path}: {exc}") from exc


def has_participants(db_path: Path) -> bool:
    """False for a missing or empty database: a fresh start must not push over a good backup."""
    if not db_path.is_file():
        return False
    conn = sqlite3.connect(db_path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM participants").fetchone()[0] > 0
    except sqlite3.DatabaseError:
        return False
    finally:
        conn.close()


def database_id(path: Path) -> str | None:
    """An id that tells this database from every other one: when its first migration ran, to
    the microsecond. It travels with the database through backups and replicas, so a replica
    can tell whose it is. None when `path` is not a migrated database."""
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.DatabaseError:
        return None
    try:
        row = conn.execute(
            "SELECT migration_set || ':' || applied_at FROM _sqlite_migrations ORDER BY id LIMIT 1"
        ).fetchone()
    except sqlite3.DatabaseError:
        return None
    finally:
        conn.close()
    return row[0] if row else None


def insert(db: Database, table: str, row: dict[str, Any]) -> int:
    """Insert `row` into `table` and return the id SQLite gave it. sqlite-utils types `last_pk`
    Optional because an `insert(ignore=True)` may insert nothing; a plain insert either stores
    the row or raises, so a missing id here is a broken invariant, not a refusal."""
    pk = db.table(table).insert(row).last_pk
    if pk is None:
        raise StorageError(f"inserting into {table} gave no row id")
    return int(pk)
