"""Cost of the points rules per round: the project's Shapley rule against the paper's rule.

    .venv/bin/python bench/points.py [--repeats 7]

Cases: one group of 12 contributors (exact Owen values) and 100 contributors in 5 groups
(sampled), each contributor with 3 emotion corrections (28-d vectors); plus 100 contributors on
the preference task. The two rules run interleaved, repeat after repeat, so both see the same
machine load; the medians and their ratio are printed, the last line is one JSON object.
Targets: under 1 s for the group of 12, under 5 s for 100 contributors.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np

from crowd.points import ContributionItem, PaperRule, RoundOutcome, ShapleyRule

DIMENSIONS = 28  # GoEmotions labels


def emotion_round(
    n_contributors: int,
    n_groups: int,
    per_person: int,
    rng: np.random.Generator,
    task: str = "emotion",
) -> RoundOutcome:
    items: list[ContributionItem] = []
    members: dict[int, list[str]] = {g: [] for g in range(n_groups)}
    for i in range(n_contributors):
        person, g = f"volunteer-{i}", i % n_groups
        members[g].append(person)
        for _ in range(per_person):
            vector = rng.dirichlet(np.full(DIMENSIONS, 0.3)) if task == "emotion" else None
            margin = float(rng.normal(0.05, 0.1)) if task == "preference" else None
            items.append(ContributionItem(person, g, vector, margin))
    scores = {g: float(-rng.random()) for g in range(n_groups)}
    target = rng.dirichlet(np.full(DIMENSIONS, 0.3)) if task == "emotion" else None
    return RoundOutcome(
        int(rng.integers(1 << 30)), task, True, n_groups, scores, members, items, target
    )


def timed(rule, outcome: RoundOutcome) -> float:
    start = time.perf_counter()
    rule.award(outcome)
    return time.perf_counter() - start


def bench_case(name: str, outcomes: list[RoundOutcome], target_s: float) -> dict:
    """Median seconds per round of each rule over `outcomes`, run interleaved."""
    shapley, paper = ShapleyRule(), PaperRule()
    timed(shapley, outcomes[0])  # warm-up: imports, first allocations
    ours, base = [], []
    for outcome in outcomes:
        ours.append(timed(shapley, outcome))
        base.append(timed(paper, outcome))
    result: dict[str, Any] = {
        "case": name,
        "shapley_s": statistics.median(ours),
        "shapley_max_s": max(ours),
        "paper_s": statistics.median(base),
        "target_s": target_s,
    }
    result["ratio"] = result["shapley_s"] / result["paper_s"]
    result["meets_target"] = result["shapley_max_s"] < target_s
    print(
        f"{name:<28} shapley {result['shapley_s'] * 1e3:8.1f} ms (max "
        f"{result['shapley_max_s'] * 1e3:.1f})  paper {result['paper_s'] * 1e3:7.3f} ms  "
        f"ratio {result['ratio']:8.0f}x  target < {target_s:g} s: "
        f"{'met' if result['meets_target'] else 'MISSED'}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    cases = [
        ("group of 12 (exact)", [emotion_round(12, 1, 3, rng) for _ in range(args.repeats)], 1.0),
        (
            "3 groups of 12 (sampled)",
            [emotion_round(36, 3, 3, rng) for _ in range(args.repeats)],
            5.0,
        ),
        (
            "100 contributors (sampled)",
            [emotion_round(100, 5, 3, rng) for _ in range(args.repeats)],
            5.0,
        ),
        (
            "100 contributors, preference",
            [emotion_round(100, 5, 3, rng, "preference") for _ in range(args.repeats)],
            5.0,
        ),
    ]
    results = [bench_case(name, outcomes, target) for name, outcomes, target in cases]
    print("absolute times depend on machine load; compare the ratios, taken in one run")
    print(json.dumps({"cases": results}))


if __name__ == "__main__":
    main()
