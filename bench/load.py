"""Load benchmark: simulated volunteers chat and submit at once through the app's real HTTP API
(`gradio_client` against `app.py` in a subprocess, on the default model) while a round trains,
under each generation scheduler in turn, in one run.

    .venv/bin/python bench/load.py [--schedulers static,continuous] [--volunteers 20]
                                   [--levels 1,2,4,8,16,32] [--level-seconds 60]

For each scheduler (`CROWD_SCHEDULER`; one app process each, one after the other):
1. seed rewrites in every group, so that the first round has data to train on (untimed);
2. heavy arms (bench/load_crowd.py says what heavy and realistic volunteers do): one volunteer,
   N volunteers, one volunteer again (the two single arms pooled as the baseline);
3. capacity: realistic volunteers at growing counts (`--levels`), `--level-seconds` each,
   until a count fails: p95 time to first token at or over `--ttft-limit` (2 s), a submission
   lost, or an HTTP error. The capacity is the largest count that passed (a lower bound when
   the last level passed, or passed while the round trained under 90 % of the time: see
   TRAINED_SHARE).
Whenever the worker is idle and a group has data, the round is closed again, so training runs
throughout. Time to first token is measured at the client, from sending the message to the
first streamed text. Submissions lost: confirmed to the client but absent from the database
(must be 0). The last line is one JSON object: the default (continuous) scheduler's figures at
the top level, both schedulers under "schedulers", and the two capacities and their ratio.
Absolute seconds depend on the machine and whatever else runs on it; compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from load_crowd import (
    Tally,
    free_port,
    heavy,
    lost,
    percentile,
    realistic,
    run_arm,
    seed,
    start_app,
)

TRAINED_SHARE = 0.9
"""A capacity level counts only if a round trained at least this share of its time: the
capacity is defined with a round training throughout. A level that passed without one ends the
search unmeasured ("untrained"); the capacity found so far is then a lower bound."""


def r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def summary(arm: Tally) -> dict:
    return {
        "replies": len(arm.replies),
        "submissions": len(arm.submissions),
        "ttft_p50_s": r(percentile(arm.ttft, 50)),
        "ttft_p95_s": r(percentile(arm.ttft, 95)),
        "reply_p50_s": r(percentile(arm.replies, 50)),
        "reply_p95_s": r(percentile(arm.replies, 95)),
        "submit_p50_s": r(percentile(arm.submissions, 50)),
        "submit_p95_s": r(percentile(arm.submissions, 95)),
        "refused": arm.refused,
        "errors": len(arm.errors),
        "training_busy_share": r(sum(arm.busy) / len(arm.busy)) if arm.busy else None,
    }


def pooled(a: Tally, b: Tally) -> Tally:
    refused = {k: a.refused.get(k, 0) + b.refused.get(k, 0) for k in {*a.refused, *b.refused}}
    return Tally(
        a.ttft + b.ttft,
        a.replies + b.replies,
        a.submissions + b.submissions,
        a.confirmed + b.confirmed,
        refused,
        a.errors + b.errors,
        a.busy + b.busy,
    )


def capacity(url: str, db_path: Path, args, closed: list) -> tuple[int, list[dict]]:
    """Realistic crowds of growing size until one fails; (largest that passed, every level)."""
    passed, levels = 0, []
    for i, count in enumerate(args.levels):
        tally = run_arm(url, db_path, 1000 * (i + 1), count, args.level_seconds, realistic, closed)
        p95, gone = percentile(tally.ttft, 95), lost(db_path, tally.confirmed)
        ok = p95 is not None and p95 < args.ttft_limit and gone == 0 and not tally.errors
        trained = sum(tally.busy) >= TRAINED_SHARE * max(1, len(tally.busy))
        verdict = "fail" if not ok else "pass" if trained else "untrained"
        levels.append(
            {"volunteers": count, "passed": verdict == "pass", "verdict": verdict, "lost": gone}
            | summary(tally)
        )
        print(f"  capacity level {count:>3}: {verdict.upper()} {levels[-1]}", flush=True)
        if verdict != "pass":
            break
        passed = count
    return passed, levels


def run_scheduler(args, scheduler: str) -> dict:
    """Every arm against one app process running `scheduler`."""
    work = Path(tempfile.mkdtemp(prefix=f"crowd-load-{scheduler}-"))
    data_dir, port = work / "data", free_port()
    data_dir.mkdir()
    started = time.monotonic()
    app = start_app(data_dir, port, args.tokens, scheduler, args.base_model, work / "app.log")
    url, db_path = f"http://127.0.0.1:{port}/", data_dir / "crowd.db"
    closed: list[float] = []  # when the keeper closed a round (monotonic seconds)
    try:
        seed(url, args.seed_people, args.seed_rewrites)
        first = run_arm(url, db_path, 100, 1, args.baseline_seconds, heavy, closed)
        loaded = run_arm(url, db_path, 200, args.volunteers, args.seconds, heavy, closed)
        second = run_arm(url, db_path, 300, 1, args.baseline_seconds, heavy, closed)
        baseline = pooled(first, second)
        missing = lost(db_path, baseline.confirmed + loaded.confirmed)
        cap, levels = capacity(url, db_path, args, closed)
    finally:
        app.terminate()
        app.wait(timeout=30)
    result = figures(args, loaded, baseline, missing, len(closed))
    bounded = bool(levels) and levels[-1]["verdict"] != "fail"
    result.update(capacity=cap, capacity_is_lower_bound=bounded, levels=levels)
    result["minutes"] = round((time.monotonic() - started) / 60, 1)
    for error in (loaded.errors + baseline.errors)[:5]:
        print("error:", error)
    shutil.rmtree(work, ignore_errors=True)
    return result


def figures(args, loaded: Tally, baseline: Tally, missing: int, rounds_closed: int) -> dict:
    heavy_arm, light = summary(loaded), summary(baseline)
    return {
        "volunteers": args.volunteers,
        "seconds": args.seconds,
        "tokens": args.tokens,
        "submissions_confirmed": len(loaded.confirmed) + len(baseline.confirmed),
        "submissions_lost": missing,
        "rounds_closed_during_run": rounds_closed,
        "loaded": heavy_arm,
        "baseline": light,
        "ttft_p50_s": heavy_arm["ttft_p50_s"],
        "ttft_p95_s": heavy_arm["ttft_p95_s"],
        "ttft_p95_ratio": ratio(heavy_arm["ttft_p95_s"], light["ttft_p95_s"]),
        "reply_p50_ratio": ratio(heavy_arm["reply_p50_s"], light["reply_p50_s"]),
        "reply_p95_ratio": ratio(heavy_arm["reply_p95_s"], light["reply_p95_s"]),
        "submit_p50_ratio": ratio(heavy_arm["submit_p50_s"], light["submit_p50_s"]),
        "submit_p95_ratio": ratio(heavy_arm["submit_p95_s"], light["submit_p95_s"]),
    }


def report(args, by_scheduler: dict[str, dict]) -> dict:
    main = by_scheduler.get("continuous") or next(iter(by_scheduler.values()))
    result = {k: v for k, v in main.items() if k not in ("levels",)}
    result["scheduler"] = "continuous" if "continuous" in by_scheduler else args.schedulers[0]
    result["schedulers"] = by_scheduler
    for name, figures_ in by_scheduler.items():
        print(
            f"{name:>10}: ttft p50/p95 {figures_['ttft_p50_s']}/{figures_['ttft_p95_s']} s "
            f"(x{figures_['ttft_p95_ratio']} of one volunteer), reply p95 "
            f"{figures_['loaded']['reply_p95_s']} s, capacity {figures_['capacity']}"
            f"{'+' if figures_['capacity_is_lower_bound'] else ''}, lost "
            f"{figures_['submissions_lost']}"
        )
        result[f"capacity_{name}"] = figures_["capacity"]
    result["capacity_ratio"] = ratio(
        result.get("capacity_continuous"), result.get("capacity_static")
    )
    result["submissions_lost"] = sum(f["submissions_lost"] for f in by_scheduler.values()) + sum(
        level["lost"] for f in by_scheduler.values() for level in f["levels"]
    )
    print(json.dumps(result))
    return result


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--schedulers",
        default="static,continuous",
        help="comma-separated, run in this order: static, continuous",
    )
    parser.add_argument("--volunteers", type=int, default=20, help="heavy volunteers")
    parser.add_argument("--seconds", type=float, default=60.0, help="heavy arm")
    parser.add_argument("--baseline-seconds", type=float, default=20.0, help="each single arm")
    parser.add_argument("--levels", default="1,2,4,8,16,32", help="realistic crowd sizes to try")
    parser.add_argument("--level-seconds", type=float, default=60.0)
    parser.add_argument("--ttft-limit", type=float, default=2.0, help="p95 seconds, capacity")
    parser.add_argument("--tokens", type=int, default=48, help="max new tokens per reply")
    parser.add_argument("--seed-people", type=int, default=9)
    parser.add_argument("--seed-rewrites", type=int, default=4, help="per seed volunteer")
    parser.add_argument(
        "--base-model",
        default=None,
        help="a model folder instead of the default (for a quick smoke run)",
    )
    args = parser.parse_args(argv)
    args.schedulers = [s.strip() for s in args.schedulers.split(",") if s.strip()]
    if not set(args.schedulers) <= {"static", "continuous"} or not args.schedulers:
        parser.error("--schedulers takes static and/or continuous")
    args.levels = sorted({int(n) for n in args.levels.split(",")})
    if not args.levels or args.levels[0] < 1:
        parser.error("--levels takes positive crowd sizes, e.g. 2,4,8")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    by_scheduler = {}
    for scheduler in args.schedulers:
        print(f"--- scheduler: {scheduler}", flush=True)
        by_scheduler[scheduler] = run_scheduler(args, scheduler)
    result = report(args, by_scheduler)
    return 0 if result["submissions_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
