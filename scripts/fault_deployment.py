"""The deployment the fault matrix (scripts/fault_matrix.py) breaks: a data dir and a replica
(a folder, or a bucket on moto's S3 server), and the writer it starts on them. The writer is this
file run as a child process: it runs the app's replication and commits rows, printing an ACK per
committed row as the app acknowledges a correction, then its health.

    .venv/bin/python scripts/fault_deployment.py ROWS SETTLE_S   (the matrix starts it)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


# --- the writer (a child process) -------------------------------------------------------------


def child(rows: int, settle_s: float) -> int:
    """prepare, migrate, start replicating, commit `rows` rows (ACK each), report health, then
    wait for SIGTERM (stop replicating, which flushes) or SIGKILL."""
    from crowd import replication
    from crowd.config import load_settings
    from crowd.identity import load_secret
    from storage.db import connect, migrate

    settings = load_settings()
    try:
        replica = replication.prepare(settings)
    except replication.ReplicaRefused as exc:
        print(f"REFUSED {exc}", flush=True)
        return 2
    migrate(settings.db_path)
    load_secret(settings.data_dir, settings.identity_secret)  # the app makes it at start
    replicator = replication.start(settings, replica)
    print("READY", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        with connect(settings.db_path) as db:
            base = db.table("participants").count
            for i in range(rows):
                pid = f"p{os.getpid()}-{base + i}"
                db.execute(
                    "INSERT INTO participants (id, display_name, consented_at, created_at)"
                    " VALUES (?, ?, 't', 't')",
                    [pid, "x" * 200],
                )
                db.conn.commit()
                print(f"ACK {pid}", flush=True)
        time.sleep(settle_s)
        health = replication.health_of(settings)
        print(f"HEALTH {health.verdict} {json.dumps(health.problems)}", flush=True)
        while True:
            time.sleep(0.2)
    except KeyboardInterrupt:
        if replicator is not None:
            replicator.stop()
        print("STOPPED", flush=True)
        return 0


# --- the parent --------------------------------------------------------------------------------


@dataclass
class Run:
    process: subprocess.Popen
    lines: list[str] = field(default_factory=list)

    def wait_for(self, prefix: str, timeout: float = 90) -> str | None:
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                return None
            self.lines.append(line.rstrip())
            if line.startswith(prefix) or line.startswith("REFUSED"):
                return line.rstrip()
        return None

    @property
    def acked(self) -> set[str]:
        return {line.split()[1] for line in self.lines if line.startswith("ACK ")}


class Deployment:
    """A data dir and a replica (folder or S3), and the environment a writer gets."""

    def __init__(self, tmp: Path, store: str, s3):
        self.tmp, self.store, self.s3 = tmp, store, s3
        self.data = tmp / "data"
        from apps import clean_env

        self.env = {**clean_env(), "CROWD_DATA_DIR": str(self.data), "CROWD_REPLICA_SYNC_MS": "200"}
        self.env["CROWD_REPLICA_CHECK_S"] = "10"
        if store == "folder":
            self.replica = tmp / "replica"
            self.replica.mkdir()
            self.env["CROWD_REPLICA"] = str(self.replica)
        else:
            self.bucket = s3.bucket()
            self.env |= s3.env() | {"CROWD_REPLICA": f"s3://{self.bucket}/space"}

    def start(self, rows: int = 0, settle_s: float = 12.0, **env) -> Run:
        process = subprocess.Popen(
            [sys.executable, __file__, str(rows), str(settle_s)],
            cwd=ROOT,
            env={**self.env, **{k: v for k, v in env.items() if v is not None}},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        return Run(process)

    # the replica's files, whatever the store

    def files(self) -> dict[str, bytes]:
        if self.store == "folder":
            return {
                p.relative_to(self.replica).as_posix(): p.read_bytes()
                for p in self.replica.rglob("*")
                if p.is_file()
            }
        return {k.removeprefix("space/"): v for k, v in self.s3.keys(self.bucket).items()}

    def delete(self, predicate) -> None:
        for name in [n for n in self.files() if predicate(n)]:
            if self.store == "folder":
                (self.replica / name).unlink()
            else:
                self.s3.client().delete_object(Bucket=self.bucket, Key=f"space/{name}")

    def overwrite(self, predicate, data: bytes) -> None:
        for name in [n for n in self.files() if predicate(n)]:
            if self.store == "folder":
                (self.replica / name).write_bytes(data)
            else:
                self.s3.client().put_object(Bucket=self.bucket, Key=f"space/{name}", Body=data)

    def rows(self) -> set[str]:
        try:
            conn = sqlite3.connect(self.data / "crowd.db")
            return {r[0] for r in conn.execute("SELECT id FROM participants")}
        except sqlite3.DatabaseError:
            return set()

    def wipe(self) -> None:
        shutil.rmtree(self.data, ignore_errors=True)


def fingerprint(files: dict[str, bytes], names=("replica.json", "identity.key")) -> dict:
    return {n: hashlib.sha256(files[n]).hexdigest() for n in names if n in files}


if __name__ == "__main__":
    sys.exit(child(int(sys.argv[1]), float(sys.argv[2])))
