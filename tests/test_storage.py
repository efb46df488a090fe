import sqlite3
import stat

import pytest

from storage.db import StorageError, connect, migrate
from storage.schema import MIGRATIONS

NOW = "2026-11-25T10:00:00+00:00"


def test_migrate_is_idempotent_and_uses_wal(db_path):
    migrate(db_path)
    with connect(db_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert not MIGRATIONS.pending(db)
        assert {"participants", "corrections", "points", "jobs", "model_versions"} <= set(
            db.table_names()
        )


def test_foreign_keys_are_enforced(db_path):
    with connect(db_path) as db, pytest.raises(sqlite3.IntegrityError):
        db["memberships"].insert(
            {"round_id": 99, "participant_id": "ghost", "group_index": 0, "assigned_at": NOW}
        )


def test_points_ledger_is_append_only(db_path):
    with connect(db_path) as db:
        db["participants"].insert(
            {"id": "p1", "display_name": "Ada", "consented_at": NOW, "created_at": NOW}
        )
        cid = (
            db["campaigns"]
            .insert({"name": "c", "task": "emotion", "n_groups": 2, "created_at": NOW})
            .last_pk
        )
        vid = (
            db["model_versions"]
            .insert({"campaign_id": cid, "status": "champion", "created_at": NOW})
            .last_pk
        )
        rid = (
            db["rounds"]
            .insert({"campaign_id": cid, "number": 1, "champion_id": vid, "opened_at": NOW})
            .last_pk
        )
        db["points"].insert(
            {
                "round_id": rid,
                "participant_id": "p1",
                "amount": 2,
                "rule": "paper",
                "reason": "{}",
                "created_at": NOW,
            }
        )
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE points SET amount = 100")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM points")
        assert db.execute("SELECT amount FROM points").fetchone()[0] == 2


def test_round_state_is_checked(db_path):
    with connect(db_path) as db, pytest.raises(sqlite3.IntegrityError):
        db["campaigns"].insert({"name": "c", "task": "jokes", "n_groups": 2, "created_at": NOW})


def test_a_file_that_is_not_a_database_is_refused_and_kept(tmp_path):
    path = tmp_path / "crowd.db"
    path.write_bytes(b"this is not sqlite" * 100)
    before = path.read_bytes()
    with pytest.raises(StorageError, match=str(path)):
        migrate(path)
    assert path.read_bytes() == before


def test_an_unwritable_data_dir_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="data directory"):
        migrate(blocker / "sub" / "crowd.db")


def test_the_database_is_private_and_commits_are_durable(tmp_path):
    """Created 0600 (its -wal and -shm follow it); synchronous=FULL on every connection."""
    path = tmp_path / "data" / "crowd.db"
    migrate(path)
    with connect(path) as db:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        db.execute(
            "INSERT INTO participants (id, display_name, consented_at, created_at)"
            " VALUES ('p', 'P', 't', 't')"
        )
        db.conn.commit()
        for name in ("crowd.db", "crowd.db-wal", "crowd.db-shm"):
            assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name
