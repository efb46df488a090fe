"""The fault matrix: every way we know to break a replicated deployment, on a folder replica and
on an S3 replica (moto's server on loopback), with the real Litestream. Each fault starts a
writer (a child process that runs the app's replication and commits rows, printing an ACK per
committed row, as the app acknowledges a correction), breaks something, then starts again and
judges the outcome:

- loss: the second start serves, and an acknowledged row, or the identity key (every token),
  is gone;
- silent overwrite: the replica's marker, key file or database was replaced by another's while
  no refusal and no failing health said so;
- silent failure: replication is broken, the app serves, and its health does not say FAILING.
A refusal to start (exit 2, a message naming the replica) with the replica untouched is the
right outcome where there is nothing to start on.

    .venv/bin/python scripts/fault_matrix.py [--only NAME] [--stores folder,s3]

Prints one line per fault, then "N of M faults with loss or silent overwrite".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
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
            base = db["participants"].count
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
            [sys.executable, __file__, "--child", str(rows), str(settle_s)],
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


@dataclass
class Outcome:
    name: str
    store: str
    verdict: str  # ok, refused, loss, overwrite, silent
    detail: str


def judge(name, d: Deployment, first: Run, second: Run, before: dict, failing=False):
    """The verdict on the second start, given what the first acknowledged."""
    line = second.wait_for("HEALTH", timeout=120)
    after = fingerprint(d.files())
    changed = {n for n in before if after.get(n) != before[n]}
    if line is None or line.startswith("REFUSED"):
        second.process.wait(30)
        why = (line or "no answer")[:110]
        if changed:
            return Outcome(name, d.store, "overwrite", f"refused but {changed} changed: {why}")
        return Outcome(name, d.store, "refused", why)
    lost = first.acked - d.rows()
    verdict = line.split()[1]
    key_changed = "identity.key" in changed
    if lost or key_changed:
        return Outcome(
            name, d.store, "loss", f"{len(lost)} acknowledged rows lost, key {key_changed}"
        )
    if changed and verdict != "failing":
        return Outcome(name, d.store, "overwrite", f"{changed} replaced silently")
    if failing and verdict != "failing":
        return Outcome(name, d.store, "silent", f"replication broken, health {verdict}")
    return Outcome(name, d.store, "ok", f"{len(first.acked)} rows kept, health {verdict}")


def stop(run: Run, sig=signal.SIGTERM) -> None:
    if run.process.poll() is None:
        run.process.send_signal(sig)
        try:
            run.process.wait(60)
        except subprocess.TimeoutExpired:
            run.process.kill()


def written(d: Deployment, rows: int = 5, settle_s: float = 2.0) -> Run:
    first = d.start(rows=rows, settle_s=settle_s)
    first.wait_for("HEALTH")
    return first


# Each fault: (name, function(deployment, name) -> Outcome). They share one shape: write,
# break, start again (`start_again`), judge.


def start_again(d: Deployment, name: str, first: Run, wipe: bool, failing=False, **env):
    """Maybe wipe the disk, start a second writer on what is left, judge it, stop it."""
    before = fingerprint(d.files())  # what the second start finds
    if wipe:
        d.wipe()
    second = d.start(**env)
    try:
        return judge(name, d, first, second, before, failing)
    finally:
        stop(second)


def restart_after(sig, wipe: bool):
    def fault(d: Deployment, name: str) -> Outcome:
        first = written(d)
        stop(first, sig)
        return start_again(d, name, first, wipe)

    return fault


def kill_right_after_acks(wipe: bool):
    """SIGKILL the writer the moment its last row is acknowledged (Litestream follows it)."""

    def fault(d: Deployment, name: str) -> Outcome:
        first = d.start(rows=5, settle_s=30)
        while len(first.acked) < 5 and first.wait_for("ACK", 60):
            pass
        stop(first, signal.SIGKILL)
        time.sleep(3)  # Litestream's last sync, after its parent died
        return start_again(d, name, first, wipe)

    return fault


def kill_at_start(d: Deployment, name: str) -> Outcome:
    first = d.start(rows=0, settle_s=30)
    first.wait_for("READY")
    stop(first, signal.SIGKILL)
    return start_again(d, name, first, wipe=True)


def broken_replica(mutate, wipe: bool, failing: bool = False):
    """Write, stop cleanly, damage the replica (and maybe wipe the disk), start again."""

    def fault(d: Deployment, name: str) -> Outcome:
        first = written(d)
        stop(first)
        mutate(d)
        return start_again(d, name, first, wipe, failing)

    return fault


def broken_access(env: dict, wipe: bool):
    """Write, stop, then start with the replica unreachable or refusing."""

    def fault(d: Deployment, name: str) -> Outcome:
        changes = dict(env)
        if d.store == "folder" and "CROWD_REPLICA" in changes:
            changes["CROWD_REPLICA"] = str(d.tmp / "not-mounted")
        elif d.store == "folder":
            return Outcome(name, d.store, "n/a", "no credentials or endpoint for a folder")
        if changes.get("CROWD_REPLICA") == "BUCKET":
            changes["CROWD_REPLICA"] = "s3://no-such-bucket/space"
        first = written(d)
        stop(first)
        return start_again(d, name, first, wipe, not wipe, **changes)

    return fault


def other_database(d: Deployment, name: str) -> Outcome:
    first = written(d)
    stop(first)
    before = fingerprint(d.files())
    d.data = d.tmp / "other-data"  # another campaign's app pointed at the same replica
    d.env["CROWD_DATA_DIR"] = str(d.data)
    from storage.db import migrate

    migrate(d.data / "crowd.db")
    second = d.start(rows=3)
    try:
        outcome = judge(name, d, Run(first.process, []), second, before)
        if outcome.verdict == "ok" and not any("belongs to another" in p for p in second.lines):
            health = next((x for x in second.lines if x.startswith("HEALTH")), "")
            if "failing" not in health:
                return Outcome(name, d.store, "silent", "another database's replica, not failing")
        return outcome
    finally:
        stop(second)


def ltx(name: str) -> bool:
    return name.endswith(".ltx")


def in_db(name: str) -> bool:
    return name.startswith("db/")


FAULTS = {
    "sigterm, same disk": restart_after(signal.SIGTERM, wipe=False),
    "sigterm, wiped disk": restart_after(signal.SIGTERM, wipe=True),
    "sigkill of the app, wiped disk": restart_after(signal.SIGKILL, wipe=True),
    "sigkill right after the acks, same disk": kill_right_after_acks(wipe=False),
    "sigkill right after the acks, wiped disk": kill_right_after_acks(wipe=True),
    "sigkill at start-up, wiped disk": kill_at_start,
    "replica db/ lost, wiped disk": broken_replica(lambda d: d.delete(in_db), wipe=True),
    "replica db/ lost, same disk": broken_replica(lambda d: d.delete(in_db), wipe=False),
    "replica marker lost, wiped disk": broken_replica(
        lambda d: d.delete(lambda n: n == "replica.json"), wipe=True
    ),
    "replica key file lost, wiped disk": broken_replica(
        lambda d: d.delete(lambda n: n == "identity.key"), wipe=True
    ),
    "replica LTX corrupt, wiped disk": broken_replica(
        lambda d: d.overwrite(ltx, b"garbage"), wipe=True
    ),
    "replica LTX corrupt, same disk": broken_replica(
        lambda d: d.overwrite(ltx, b"garbage"), wipe=False, failing=True
    ),
    "replica emptied entirely, same disk": broken_replica(
        lambda d: d.delete(lambda n: True), wipe=False
    ),
    "wrong credentials, wiped disk": broken_access({"AWS_SECRET_ACCESS_KEY": "wrong"}, True),
    "wrong credentials, same disk": broken_access({"AWS_SECRET_ACCESS_KEY": "wrong"}, False),
    "unreachable endpoint, wiped disk": broken_access(
        {"CROWD_S3_ENDPOINT": "http://127.0.0.1:9"}, True
    ),
    "unreachable endpoint, same disk": broken_access(
        {"CROWD_S3_ENDPOINT": "http://127.0.0.1:9"}, False
    ),
    "missing bucket or mount, wiped disk": broken_access({"CROWD_REPLICA": "BUCKET"}, True),
    "missing bucket or mount, same disk": broken_access({"CROWD_REPLICA": "BUCKET"}, False),
    "another database's app on the replica": other_database,
}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(int(sys.argv[2]), float(sys.argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run the faults whose name contains this")
    parser.add_argument("--stores", default="folder,s3")
    args = parser.parse_args()
    from apps import S3Server

    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="crowd-faults-") as tmp:
        s3 = S3Server(Path(tmp) / "moto.log")
        try:
            for store in args.stores.split(","):
                for name, fault in FAULTS.items():
                    if args.only and args.only not in name:
                        continue
                    where = Path(tempfile.mkdtemp(prefix="fault-", dir=tmp))
                    outcome = fault(Deployment(where, store, s3), name)
                    outcomes.append(outcome)
                    print(
                        f"{store:>6} | {name:<44} | {outcome.verdict:<9} | {outcome.detail}",
                        flush=True,
                    )
        finally:
            s3.close()
    counted = [o for o in outcomes if o.verdict != "n/a"]
    bad = [o for o in counted if o.verdict in ("loss", "overwrite")]
    silent = [o for o in counted if o.verdict == "silent"]
    print(
        f"{len(bad)} of {len(counted)} faults with loss or silent overwrite;"
        f" {len(silent)} with a silent replication failure"
    )
    return 1 if bad or silent else 0


if __name__ == "__main__":
    sys.exit(main())
