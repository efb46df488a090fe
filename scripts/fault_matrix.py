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
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


from fault_deployment import Deployment, Run, fingerprint  # noqa: E402


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
