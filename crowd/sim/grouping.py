"""`python -m crowd simulate grouping`: the paper's experiment 2 on any crowd of user vectors.

Users are points (rows of a CSV: an id, then numeric dimensions); the expert is the mean of a
random subset of them (removed from the crowd); the model starts uniformly at random inside the
users' bounding box. Each round the crowd is regrouped (`crowd.groups.regroup`), each group's
candidate is model + step * (points^2-weighted centroid of its members - model), candidates are
scored against the expert, and the model moves to the best candidate if it beats the model
(with probability `noise` the top group is swapped with another: evaluation noise). Points come
from a `crowd.points` rule fed the same `RoundOutcome` the live app builds.

Fairness is the correlation between final points and each user's Shapley value in the game
v(S) = score(mean of S, expert), v(empty) = score(0, expert): exact up to 14 users, else
stratified permutation sampling to a stated error (`--reference-error`, a fraction of the
values' spread at 3 standard errors). Every setting sees the same crowds, experts and starting
models in run r (common random numbers), so the rules are compared on identical draws.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

from crowd.groups import GROUPING_METHODS, regroup
from crowd.points import ContributionItem, PointsRule, RoundOutcome, ShapleyRule, get_rule
from crowd.shapley import METRICS, MeanVectorGame, Stopping, score, shapley
from crowd.sim.grouping_report import write_outputs
from crowd.sim.grouping_world import World, draw_world, load_users, users_from_jsonl

RULE_NAMES = ("paper", "shapley")
REFERENCE_EXACT_LIMIT = 14


@dataclass(frozen=True)
class Setting:
    n_users: int
    n_groups: int
    grouping: str
    metric: str
    points: str


@dataclass(frozen=True)
class Config:
    rounds: int = 100
    runs: int = 20
    seed: int = 0
    expert_size: int = 1
    step: float = 0.1  # how far a candidate moves toward its group's centroid
    noise: float = 0.05  # probability that the top group is swapped with another
    within: float = 0.5  # "rounds to get within": this fraction of the starting distance
    reference_error: float = 0.02


def reference(world: World, metric: str, relative: float, seed: int) -> tuple[np.ndarray, float]:
    """Shapley values of the users and their largest stated error (fraction of the spread)."""
    game = MeanVectorGame.one_each(world.users, world.expert, metric)
    estimate = shapley(
        game,
        np.random.default_rng(seed),
        exact_limit=REFERENCE_EXACT_LIMIT,
        stopping=Stopping(relative=relative),
    )
    spread = float(np.ptp(estimate.values)) or 1.0
    return estimate.values, float(estimate.error.max()) / spread


def _rule(setting: Setting, seed: int) -> PointsRule:
    if setting.points == "shapley":
        return ShapleyRule(metric=setting.metric, seed=seed)
    return get_rule(setting.points)


def _outcome(
    round_id: int,
    groups: np.ndarray,
    scores: np.ndarray,
    improved: bool,
    world: World,
    ids: list[str],
) -> RoundOutcome:
    n_groups = len(scores)
    members = {g: [ids[i] for i in np.flatnonzero(groups == g)] for g in range(n_groups)}
    items = [
        ContributionItem(ids[i], int(groups[i]), world.users[i], None) for i in range(len(ids))
    ]
    return RoundOutcome(
        round_id,
        "emotion",
        improved,
        n_groups,
        {g: float(s) for g, s in enumerate(scores)},
        members,
        items,
        world.expert,
    )


def simulate(
    world: World, setting: Setting, cfg: Config, seed: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One run: final points (n,), the model's distance to the expert per round (R + 1,) and
    the final model (d,)."""
    rng, prng = np.random.default_rng(seed), random.Random("-".join(map(str, seed)))
    rule = _rule(setting, cfg.seed)
    ids = [f"u{i}" for i in range(setting.n_users)]
    index = {p: i for i, p in enumerate(ids)}
    points, model = np.ones(setting.n_users), world.start.copy()
    distances = [float(np.linalg.norm(model - world.expert))]
    for r in range(cfg.rounds):
        assignment = regroup(
            ids,
            dict(zip(ids, points.tolist())),
            setting.n_groups,
            setting.grouping,
            r,
            cfg.rounds,
            prng,
        )
        groups = np.array([assignment[p] for p in ids])
        weights = np.zeros((setting.n_groups, setting.n_users))
        weights[groups, np.arange(setting.n_users)] = points**2
        centroids = weights @ world.users / weights.sum(axis=1, keepdims=True)
        candidates = model + cfg.step * (centroids - model)
        scores = score(candidates, world.expert, setting.metric)
        improved = bool(scores.max() > score(model, world.expert, setting.metric))
        ranking = np.argsort(-scores, kind="stable")
        if improved and setting.n_groups > 1 and rng.random() < cfg.noise:
            other = int(rng.integers(1, setting.n_groups))
            scores[[ranking[0], ranking[other]]] = scores[[ranking[other], ranking[0]]]
            ranking[[0, other]] = ranking[[other, 0]]
        if improved:
            model = candidates[ranking[0]]
        for award in rule.award(_outcome(r, groups, scores, improved, world, ids)):
            points[index[award.participant_id]] += award.amount
        distances.append(float(np.linalg.norm(model - world.expert)))
    return points, np.array(distances), model


def _correlations(points: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    if np.ptp(points) == 0 or np.ptp(values) == 0:
        return float("nan"), float("nan")
    return float(pearsonr(points, values)[0]), float(spearmanr(points, values)[0])


def run_setting(
    setting: Setting, cfg: Config, worlds: list[World], references: list[np.ndarray]
) -> tuple[list[dict], np.ndarray]:
    """Every run of one setting: a row per run, and the mean distance per round."""
    rows, curves = [], []
    code = [GROUPING_METHODS.index(setting.grouping), METRICS.index(setting.metric)]
    for run, (world, ref) in enumerate(zip(worlds, references)):
        seed = [cfg.seed, setting.n_users, setting.n_groups, *code, run]
        points, distances, model = simulate(world, setting, cfg, seed)
        pearson, spearman = _correlations(points, ref)
        reached = np.flatnonzero(distances <= cfg.within * distances[0])
        final_score = float(score(model, world.expert, setting.metric))
        rows.append(
            {
                **asdict(setting),
                "run": run,
                "pearson": pearson,
                "spearman": spearman,
                "final_distance": distances[-1],
                "final_score": final_score,
                "start_distance": distances[0],
                "rounds_to_within": int(reached[0]) if reached.size else None,
            }
        )
        curves.append(distances)
    return rows, np.mean(curves, axis=0)


def summarise(setting: Setting, rows: list[dict]) -> dict:
    """Mean figures of a setting over its runs (NaN-safe; None when no run has a figure)."""

    def mean(key: str) -> float | None:
        vals = [r[key] for r in rows if r[key] is not None and np.isfinite(r[key])]
        return round(float(np.mean(vals)), 4) if vals else None

    reached = [r["rounds_to_within"] for r in rows if r["rounds_to_within"] is not None]
    return {
        **asdict(setting),
        "runs": len(rows),
        "pearson": mean("pearson"),
        "spearman": mean("spearman"),
        "final_distance": mean("final_distance"),
        "final_score": mean("final_score"),
        "rounds_to_within": round(float(np.mean(reached)), 1) if reached else None,
        "reached_within": round(len(reached) / len(rows), 3) if rows else None,
    }


def _reference_task(args: tuple[World, str, float, int]) -> tuple[np.ndarray, float]:
    return reference(*args)


def _setting_task(
    args: tuple[Setting, Config, list[World], list[np.ndarray]],
) -> tuple[list[dict], np.ndarray]:
    return run_setting(*args)


class _InProcess:
    """The executor protocol's `map`, run here: one job needs no worker process."""

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn, items):
        return map(fn, items)


def sweep(
    users: np.ndarray, settings: list[Setting], cfg: Config, jobs: int
) -> tuple[list[dict], list[dict], dict[Setting, np.ndarray], float]:
    """All settings: per-run rows, per-setting summaries, mean distance curves, and the largest
    stated error of the Shapley references (fraction of their spread)."""
    sizes = sorted({s.n_users for s in settings})
    metrics = sorted({s.metric for s in settings})
    worlds = {
        n: [
            draw_world(users, n, cfg.expert_size, np.random.default_rng([cfg.seed, n, r]))
            for r in range(cfg.runs)
        ]
        for n in sizes
    }
    keys = [(n, m, r) for n in sizes for m in metrics for r in range(cfg.runs)]
    ref_args = [(worlds[n][r], m, cfg.reference_error, cfg.seed + r) for n, m, r in keys]
    with ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else _InProcess() as pool:
        refs = dict(zip(keys, pool.map(_reference_task, ref_args)))
        tasks = [
            (
                s,
                cfg,
                worlds[s.n_users],
                [refs[(s.n_users, s.metric, r)][0] for r in range(cfg.runs)],
            )
            for s in settings
        ]
        results = list(pool.map(_setting_task, tasks))
    rows = [row for setting_rows, _ in results for row in setting_rows]
    summaries = [summarise(s, setting_rows) for s, (setting_rows, _) in zip(settings, results)]
    curves = {s: curve for s, (_, curve) in zip(settings, results)}
    return rows, summaries, curves, max((err for _, err in refs.values()), default=0.0)


def _list(kind: type, choices: tuple[str, ...] | None = None):
    def parse(text: str) -> list:
        values = [kind(v) for v in text.split(",") if v]
        bad = [v for v in values if choices is not None and v not in choices]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"expected a comma list of {choices or kind.__name__}")
        return values

    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m crowd simulate grouping",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--users", type=Path, required=True, help="CSV of user vectors (id, dims...)")
    p.add_argument(
        "--users-from",
        type=Path,
        nargs="+",
        metavar="JSONL",
        help="first write --users from these JSONL records' `scores`",
    )
    p.add_argument("--n-users", type=_list(int), default=[100], help="comma list, e.g. 10,100")
    p.add_argument("--groups", type=_list(int), default=[5], help="comma list, e.g. 2,3,4,5")
    p.add_argument("--grouping", type=_list(str, GROUPING_METHODS), default=["random"])
    p.add_argument("--metric", type=_list(str, METRICS), default=["l2"])
    p.add_argument("--points", type=_list(str, RULE_NAMES), default=list(RULE_NAMES))
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--expert-size", type=int, default=1, help="users averaged into the expert")
    p.add_argument(
        "--within",
        type=float,
        default=0.5,
        help="report rounds until the distance is this fraction of the start",
    )
    p.add_argument(
        "--reference-error",
        type=float,
        default=0.02,
        help="sampled Shapley reference: stated error as a fraction of the spread",
    )
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.runs < 1 or args.jobs < 1 or args.expert_size < 1:
        p.error("--rounds, --runs, --jobs and --expert-size must be at least 1")
    if min(args.n_users) < 2 or min(args.groups) < 1:
        p.error("--n-users must be at least 2 and --groups at least 1")
    if max(args.groups) > min(args.n_users):
        p.error("every group needs a member: --groups must not exceed --n-users")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv[1:] if argv and argv[0] == "grouping" else argv)
    if args.users_from:
        count = users_from_jsonl(args.users_from, args.users)
        print(f"wrote {count} users to {args.users}")
    try:
        users = load_users(args.users)
    except (OSError, ValueError) as error:
        print(f"error: {error}")
        return 2
    cfg = Config(
        args.rounds,
        args.runs,
        args.seed,
        args.expert_size,
        within=args.within,
        reference_error=args.reference_error,
    )
    settings = [
        Setting(n, g, grouping, metric, rule)
        for n in args.n_users
        for g in args.groups
        for grouping in args.grouping
        for metric in args.metric
        for rule in args.points
    ]
    try:
        rows, summaries, curves, ref_error = sweep(users, settings, cfg, args.jobs)
    except ValueError as error:
        print(f"error: {error}")
        return 2
    write_outputs(args.out, rows, summaries, curves)
    for s in summaries:
        print(
            f"n={s['n_users']:<4} G={s['n_groups']} {s['grouping']:<15} {s['metric']:<3} "
            f"{s['points']:<8} pearson {s['pearson']}  spearman {s['spearman']}  "
            f"final distance {s['final_distance']}  rounds to within {args.within:g} of "
            f"start {s['rounds_to_within']} ({s['reached_within']:.0%} of runs)"
        )
    print(
        f"Shapley reference: exact up to {REFERENCE_EXACT_LIMIT} users, else sampled; "
        f"largest stated error {ref_error:.2%} of the values' spread; outputs in {args.out}"
    )
    print(json.dumps(_last_line(summaries, ref_error)))
    return 0


def _last_line(summaries: list[dict], ref_error: float) -> dict:
    keys = ("pearson", "spearman", "final_distance", "final_score", "rounds_to_within")
    if len(summaries) == 1:
        return {**{k: summaries[0][k] for k in keys}, "reference_error": round(ref_error, 5)}
    by_rule = {}
    for rule in sorted({s["points"] for s in summaries}):
        picked = [s for s in summaries if s["points"] == rule]
        by_rule[rule] = {k: _mean(s[k] for s in picked) for k in keys}
        by_rule[rule]["min_pearson"] = min(
            (s["pearson"] for s in picked if s["pearson"] is not None), default=None
        )
    return {"settings": len(summaries), "by_rule": by_rule, "reference_error": round(ref_error, 5)}


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(float(np.mean(kept)), 4) if kept else None
