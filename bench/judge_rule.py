"""The judges' error rates and replies, simulated: the fixed judge (every model on S replies,
crown past 2 SE) against the sequential judge (crowd.rounds.judge), the real classes, on
replies that are on target (distance about 0.15) or off it (about 1.2), as a round's are.

    .venv/bin/python bench/judge_rule.py [--trials 2000] [--seed 0] [--p0 0.2]

A model is its chance p of an on-target reply; reply j of every model shares its sampling
noise half of the time (the same prompt and seed), so their distances are paired. Scenarios:
every candidate as good as the champion (p = 0.2: a crown is false), one better by dp, or
every candidate worse (the fear rounds of docs/results/poisoning.md). `--p0` is the champion's
chance of an on-target reply (0.2: an early round's; 0.9: a champion that misses rarely, as
love 0 %'s union did in docs/results/candidates.md). Beside the two judges, the sequential one
without its futility stop (`futility_t` -inf), to show what that stop costs. `--curse`: two
rounds, the second judged either on the first's prompts with the new champion's replies kept
(what the app did before each round sampled on seeds of its own, JudgingSettings.for_round) or
on fresh ones (what it does now). Prints, per S and
number of candidates K, the share of rounds that crown (a false crown when none is better,
the better one otherwise) and the mean replies decoded per round; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crowd.evaluation import EvalSet, Score  # noqa: E402
from crowd.rounds.judge import FixedJudge, SequentialJudge, most_replies  # noqa: E402

ON, OFF, P0 = 0.15, 1.2, 0.2
SCENARIOS = {"null": 0.0, "better 0.1": 0.1, "better 0.2": 0.2, "better 0.3": 0.3, "worse": -0.1}
# For a champion that misses rarely (p0 above 0.5) "better" is a few points fewer misses.
STRONG = {"null": 0.0, "better 0.03": 0.03, "better 0.05": 0.05, "better 0.08": 0.08, "worse": -0.1}
EVAL_SET = EvalSet("emotion", prompts=[[{"role": "user", "content": "-"}]], target=np.zeros(28))


class MixtureEvaluator:
    """The judging protocol over simulated replies: reply j of model i is on target when a
    uniform draw is below p_i; the draw is shared by all models for half of the j."""

    def __init__(
        self,
        ps: dict[str, float],
        samples: int,
        rng: np.random.Generator,
        shared: np.ndarray | None = None,
        kept: dict[str, np.ndarray] | None = None,
    ):
        """`shared`: the prompts' draws of an earlier round (the same prompts again); `kept`:
        models whose replies to them are kept from that round, as the app reuses replies."""
        self.samples, self.replies = samples, 0
        cap = most_replies(samples)
        self.shared = rng.random(cap) if shared is None else shared
        own = rng.random((len(ps), cap))
        pick = rng.random((len(ps), cap)) < 0.5
        u = np.where(pick, self.shared[None], own)
        noise = rng.normal(0, 0.12, (len(ps), cap))
        p = np.array(list(ps.values()))[:, None]
        table = np.where(u < p, ON, OFF) + noise
        self.distances = {**dict(zip(ps, table)), **(kept or {})}
        self.given: dict[str, int] = {}

    def evaluate(self, eval_set, adapters, samples=None, progress=None):
        n = samples or self.samples
        out = []
        for name in adapters:
            self.replies += max(0, n - self.given.get(name, 0))  # earlier replies are kept
            self.given[name] = max(self.given.get(name, 0), n)
            mine = [float(d) for d in self.distances[name][:n]]
            detail = {"distances": mine, "distinct": 1.0, "sd": float(np.std(mine, ddof=1))}
            out.append(Score("emotion_l2", float(np.mean(mine)), None, n, detail))
        return out


def models(p0: float, k: int, dp: float) -> dict[str, float]:
    """The champion's and k candidates' on-target chances: all p0, c0 better by dp (dp > 0),
    or every candidate worse by -dp (dp < 0)."""
    ps = {"champion": p0, **{f"c{i}": p0 for i in range(k)}}
    if dp > 0:
        ps["c0"] = min(1.0, p0 + dp)
    elif dp < 0:
        ps = {name: (p0 if name == "champion" else p0 + dp) for name in ps}
    return ps


def scenarios(p0: float) -> dict[str, float]:
    return STRONG if p0 > 0.5 else SCENARIOS


def trial(
    judge, samples: int, k: int, dp: float, rng: np.random.Generator, p0: float = P0
) -> tuple[bool, int]:
    """(crowned the right model, replies decoded) for one simulated round."""
    ps = models(p0, k, dp)
    evaluator = MixtureEvaluator(ps, samples, rng)
    verdict = judge.judge(evaluator, EVAL_SET, "champion", list(ps)[1:], 0.0)
    right = verdict.crowned and (dp <= 0 or verdict.leader == "c0")
    return right, evaluator.replies


def curse_trial(
    judge, samples: int, k: int, dp: float, rng: np.random.Generator, p0: float, keep: bool
) -> bool | None:
    """Two rounds: round 1 crowns c0 (better by LIFT) or not (None); round 2 judges the new
    champion against candidates, one better than it by dp, either on round 1's prompts with the
    champion's replies kept (keep: what the app did before per-round seeds) or on fresh ones.
    Whether round 2 crowned the right model."""
    lift = 0.3 if p0 <= 0.5 else 0.08
    first = models(p0, k, lift)
    before = MixtureEvaluator(first, samples, rng)
    crowned = judge.judge(before, EVAL_SET, "champion", list(first)[1:], 0.0)
    if not crowned.crowned:
        return None
    second = models(first[crowned.leader], k, dp)
    kept = {"champion": before.distances[crowned.leader]} if keep else None
    after = MixtureEvaluator(second, samples, rng, before.shared if keep else None, kept)
    verdict = judge.judge(after, EVAL_SET, "champion", list(second)[1:], 0.0)
    return verdict.crowned and (dp <= 0 or verdict.leader == "c0")


def curse(args, judges: dict) -> dict:
    """Round 2's crowns on round 1's prompts (the champion's replies kept) against fresh ones."""
    result: dict[str, dict] = {}
    samples = 50
    for k in (3, 5):
        print(
            f"Round 2 after a crown, S = {samples}, K = {k}: crowned on round 1's prompts / fresh"
        )
        for name, judge in judges.items():
            cells = {}
            for scenario, dp in scenarios(args.p0).items():
                share = {}
                for keep in (True, False):
                    rng = np.random.default_rng([args.seed, k, int(dp * 100) + 50, keep])
                    runs = [curse_trial(judge, samples, k, dp, rng, args.p0, keep)
                            for _ in range(args.trials)]  # fmt: skip
                    done = [r for r in runs if r is not None]
                    share["kept" if keep else "fresh"] = round(float(np.mean(done)), 3)
                cells[scenario] = share
            result[f"curse-K{k}-{name}"] = cells
            row = "  ".join(f"{s}: {c['kept']:.3f} / {c['fresh']:.3f}" for s, c in cells.items())
            print(f"  {name:11s} {row}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--p0", type=float, default=P0, help="the champion's on-target chance")
    parser.add_argument(
        "--curse", action="store_true", help="round 2 on round 1's prompts against fresh ones"
    )
    args = parser.parse_args(argv)
    if not 0.0 < args.p0 < 1.0:
        parser.error(f"--p0 must be between 0 and 1, not {args.p0}")
    judges = {
        "fixed": FixedJudge(),
        "sequential": SequentialJudge(),
        "no futility": SequentialJudge(futility_t=-math.inf),
    }
    if args.curse:
        print(json.dumps({"trials": args.trials, "p0": args.p0, **curse(args, judges)}))
        return 0
    result: dict[str, dict] = {}
    for samples in (24, 50):
        for k in (3, 5):
            print(f"S = {samples}, K = {k} candidates: crowned / replies per round")
            for name, judge in judges.items():
                cells = {}
                for scenario, dp in scenarios(args.p0).items():
                    rng = np.random.default_rng([args.seed, samples, k, int(dp * 100) + 50])
                    runs = [trial(judge, samples, k, dp, rng, args.p0) for _ in range(args.trials)]
                    cells[scenario] = {
                        "crowned": round(float(np.mean([r for r, _ in runs])), 3),
                        "replies": round(float(np.mean([n for _, n in runs])), 1),
                    }
                result[f"S{samples}-K{k}-{name}"] = cells
                row = "  ".join(
                    f"{s}: {c['crowned']:.3f} / {c['replies']:.0f}" for s, c in cells.items()
                )
                print(f"  {name:11s} {row}")
    print(json.dumps({"trials": args.trials, "p0": args.p0, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
