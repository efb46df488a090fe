"""Benchmark: the organizers' whole Data quality view for 10,000 corrections.

Writes a synthetic crowd (crowd/sim/trolls.py: honest people and a few trolls, with emotion
labels, A/B picks, rewrites and reviews) into a temporary SQLite file, then times, interleaved
in the same process so that all see the same machine load:
- view: `crowd.quality.load` + `quality_report` (alpha per family and round with the
  `krippendorff` package, coverage, the suspicion queue) - what the tab's button does;
- read: a plain read of the same rows (every correction and review as dicts), the floor any
  view over them pays;
- naive: a hand-written pure-Python nominal alpha over the same labels (pairs counted one by
  one), the cost the package saves; its alphas must equal the package's;
- export: the full dataset export of the same database, for scale.
Then checks that the trolls are the top of the suspicion queue (exit 1 if not). Prints one line
per repetition, then one JSON object with medians and ratios.

    .venv/bin/python bench/quality.py [--corrections 10000] [--honest 150] [--trolls 5] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from crowd import quality
from crowd.export import export_dataset
from crowd.sim.trolls import seed_crowd
from storage.db import connect, migrate


def view(db_path: Path, campaign_id: int) -> quality.QualityReport:
    with connect(db_path) as db:
        data = quality.load(db, campaign_id)
    return quality.quality_report(data)


def plain_read(db_path: Path) -> int:
    with connect(db_path) as db:
        rows = list(db.query("SELECT * FROM corrections")) + list(db.query("SELECT * FROM reviews"))
    return len(rows)


def naive_alpha(items: dict[str, dict[str, str]]) -> float | None:
    """Nominal alpha from the coincidence matrix, every ordered pair of values counted by hand."""
    o: dict[tuple[str, str], float] = defaultdict(float)
    for values in items.values():
        labels = list(values.values())
        m = len(labels)
        if m < 2:
            continue
        for i, a in enumerate(labels):
            for j, b in enumerate(labels):
                if i != j:
                    o[(a, b)] += 1 / (m - 1)
    n_v: dict[str, float] = defaultdict(float)
    for (a, _), weight in o.items():
        n_v[a] += weight
    n = sum(n_v.values())
    observed = sum(w for (a, b), w in o.items() if a != b)
    expected = sum(n_v[a] * n_v[b] for a in n_v for b in n_v if a != b)
    return None if not expected else 1 - (n - 1) * observed / expected


def naive_table(db_path: Path, campaign_id: int) -> dict[str, float | None]:
    with connect(db_path) as db:
        labels = quality.load(db, campaign_id).labels
    by_family: dict[str, dict[str, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))
    for family, _round, item, person, value, hidden in labels:
        if not hidden:
            by_family[family][item][person] = value
    return {family: naive_alpha(items) for family, items in by_family.items()}


def timed(fn, *args) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corrections", type=int, default=10_000)
    parser.add_argument("--honest", type=int, default=150)
    parser.add_argument("--trolls", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "crowd.db"
        migrate(db_path)
        with connect(db_path) as db:
            build_s, crowd = timed(
                seed_crowd, db, args.corrections, args.honest, args.trolls, random.Random(0), 3
            )
        print(f"built {crowd.corrections} corrections, {crowd.reviews} reviews in {build_s:.1f} s")
        for rep in range(args.repeats):  # interleaved: every measure sees the same load
            for name, fn, fargs in (
                ("view", view, (db_path, crowd.campaign_id)),
                ("read", plain_read, (db_path,)),
                ("naive", naive_table, (db_path, crowd.campaign_id)),
                ("export", export_dataset, (db_path, Path(tmp) / "export")),
            ):
                seconds, result = timed(fn, *fargs)
                times[name].append(seconds)
                if name == "view":
                    report = result
                elif name == "naive":
                    naive = result
            print(f"repeat {rep}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()))
    return report_and_check(args, crowd, report, naive, times)


def report_and_check(args, crowd, report, naive, times) -> int:
    ours = {a.family: a.alpha for a in report.agreement if a.round is None}
    same = all(
        (ours[f] is None and naive.get(f) is None) or abs(ours[f] - naive[f]) < 1e-9 for f in ours
    )
    ranks = [s.participant_id for s in report.suspects]
    troll_ranks = sorted(ranks.index(t) + 1 for t in crowd.trolls)
    top = troll_ranks == list(range(1, len(crowd.trolls) + 1))
    med = {name: statistics.median(v) for name, v in times.items()}
    result = {
        "corrections": crowd.corrections,
        "reviews": crowd.reviews,
        "people": args.honest + args.trolls,
        "view_s": round(med["view"], 3),
        "read_s": round(med["read"], 3),
        "naive_alpha_s": round(med["naive"], 3),
        "export_s": round(med["export"], 3),
        "view_over_read": round(med["view"] / med["read"], 2),
        "view_over_naive_alpha": round(med["view"] / med["naive"], 2),
        "view_over_export": round(med["view"] / med["export"], 2),
        "alpha": {f: None if a is None else round(a, 4) for f, a in ours.items()},
        "naive_alpha_matches": same,
        "troll_ranks": troll_ranks,
        "trolls_on_top": top,
        "repeats": args.repeats,
    }
    print(json.dumps(result))
    return 0 if same and top else 1


if __name__ == "__main__":
    sys.exit(main())
