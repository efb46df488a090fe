import json
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
        db.table("memberships").insert(
            {"round_id": 99, "participant_id": "ghost", "group_index": 0, "assigned_at": NOW}
        )


def test_points_ledger_is_append_only(db_path):
    with connect(db_path) as db:
        db.table("participants").insert(
            {"id": "p1", "display_name": "Ada", "consented_at": NOW, "created_at": NOW}
        )
        cid = (
            db.table("campaigns")
            .insert({"name": "c", "task": "emotion", "n_groups": 2, "created_at": NOW})
            .last_pk
        )
        vid = (
            db.table("model_versions")
            .insert({"campaign_id": cid, "status": "champion", "created_at": NOW})
            .last_pk
        )
        rid = (
            db.table("rounds")
            .insert({"campaign_id": cid, "number": 1, "champion_id": vid, "opened_at": NOW})
            .last_pk
        )
        db.table("points").insert(
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
        db.table("campaigns").insert(
            {"name": "c", "task": "jokes", "n_groups": 2, "created_at": NOW}
        )


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


def test_rows_stored_before_the_fix_are_repaired_from_the_history(tmp_path):
    """The old page showed a saved rewrite in place of the reply, yet stored a later label or
    pick as about the model's text, and the next turn's prompt with the model's text. The
    migration re-derives what each correction's page showed."""
    from sqlite_utils import Database

    db = Database(tmp_path / "old.db")
    MIGRATIONS.apply(db, stop_before="m027_shown_texts")
    t = "2026-01-01T00:00:0{}Z".format
    db.table("participants").insert(
        {"id": "ada", "display_name": "Ada", "consented_at": t(0), "created_at": t(0)}
    )
    db.table("campaigns").insert(
        {"id": 1, "name": "c", "task": "emotion", "n_groups": 1, "created_at": t(0)}
    )
    db.table("model_versions").insert({"id": 1, "campaign_id": 1, "created_at": t(0)})
    db.table("rounds").insert(
        {"id": 1, "campaign_id": 1, "number": 1, "champion_id": 1, "opened_at": t(0)}
    )
    db.table("conversations").insert(
        {"id": 1, "participant_id": "ada", "round_id": 1, "group_index": 0, "created_at": t(0)}
    )
    for mid, position, role, content, alt in [
        (1, 0, "user", "Hello", None),
        (2, 1, "assistant", "Model one.", None),
        (3, 2, "user", "And then?", None),
        (4, 3, "assistant", "Model two.", None),
        (5, 4, "assistant", "Second reply.", 4),
    ]:
        db.table("messages").insert(
            {
                "id": mid,
                "conversation_id": 1,
                "position": position,
                "role": role,
                "content": content,
                "alternative_of": alt,
                "created_at": t(0),
            }
        )
    first = json.dumps([{"role": "user", "content": "Hello"}])
    second = json.dumps(
        [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Model one."},
            {"role": "user", "content": "And then?"},
        ]
    )
    common = {"participant_id": "ada", "round_id": 1, "group_index": 0, "model_version_id": 1}
    for cid, kind, message, prompt, original, extra, at in [
        (1, "rewrite", 2, first, "Model one.", {"rewrite": "Mine one."}, t(1)),
        (2, "emotion", 2, first, "Model one.", {"emotion": "joy"}, t(2)),
        (3, "choice", 4, second, "Model two.", {"choice": "a", "other_message_id": 5}, t(3)),
        (4, "rewrite", 4, second, "Model two.", {"rewrite": "Mine two.", "undone_at": t(5)}, t(4)),
        (5, "rating", 4, second, "Model two.", {"rating": 1}, t(6)),
    ]:
        db.table("corrections").insert(
            {
                "id": cid,
                "kind": kind,
                "message_id": message,
                "prompt": prompt,
                "original": original,
                "created_at": at,
                **common,
                **extra,
            }
        )
    MIGRATIONS.apply(db)
    rows = {r["id"]: r for r in db.table("corrections").rows}
    assert [rows[i]["shown"] for i in range(1, 6)] == [
        "Model one.",  # the rewrite was made on the model's text
        "Mine one.",  # the label, on the rewrite the page showed
        "Model two.",
        "Model two.",
        "Model two.",  # the rating came after that rewrite was undone
    ]
    assert rows[3]["other_reply"] == "Second reply."
    assert json.loads(rows[3]["prompt"])[1]["content"] == "Mine one."  # the context shown
    assert rows[1]["prompt"] == first
