"""Opening the database: one connection per unit of work, WAL, foreign keys on."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
        db = Database(conn, execute_plugins=False)
        db.execute("PRAGMA foreign_keys = ON")
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.enable_wal()
        db.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"cannot open database {path}: {exc}") from exc
    return db


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
