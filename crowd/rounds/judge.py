"""Who wins a round: the champion and every candidate judged on the same held-out items, and
the best candidate crowned only when it beats the champion by more than the noise.

`FixedJudge` is the rule the loop had: every model on the evaluator's S sampled replies (the
same prompts and seeds for all: a paired design), the best candidate that has not collapsed
crowned when it beats the champion by the campaign's margin plus `crown_z` standard errors of
the paired difference (`Score.better_than`).

`SequentialJudge` spends replies where the lead is uncertain (emotion task; the preference
task's log-likelihoods are cheap and exact, and keep the fixed rule), and never more than the
fixed judge: its budget is the fixed judge's (K + 1) x S replies for K candidates. Looks at S/4,
S/2 and S replies per model (`looks`; never fewer than MIN_LOOK), every look on the first n
prompts and seeds of the same sequence (the round's own held-out prompts first, then earlier
rounds', newest first, each round's dealt one per voice in turn so that no voice owns an early
look: `crowd.rounds.material.judging_material`), so replies decoded at one look are reused at
the next:

  1. every model gets the first look's replies;
  2. the leader is the best candidate that has not collapsed; a candidate whose paired t
     statistic behind the leader exceeds DROP_T is dropped, as are collapsed ones;
  3. the leader's paired t statistic over the champion, net of the margin, t = (gain - margin)
     / SE, decides: at or below FUTILITY_T (the leader is not ahead of the champion even in its
     point estimate), keep the champion; at the look of S replies, at or above the crown boundary,
     crown it; else the leader, the champion and the candidates not dropped get the next
     look's replies, and 2-3 repeat;
  4. past S, a lead still short of the boundary gets one more look for the leader and the
     champion alone, with the replies the drops and stops saved (`extension`: up to 2S each,
     within the budget), and is crowned there at or above that look's boundary.

Early looks only save: they drop candidates and stop for futility, never crown. A new champion
is judged on at least the fixed judge's S replies, so the collapse rule (MIN_DISTINCT of its
replies distinct) sees as many of them as before: in the fear study a union candidate that said
"This is terrifying" to 6 of 13 prompts passed the rule at a first look of 13 (docs/results/
candidates.md). The crown boundary at the two crowning looks (S and the extension) is the
Student-t quantile (n - 1 degrees of freedom) at the fixed rule's one-sided level,
Phi(-crown_z) = 2.3 % for crown_z = 2, divided by the two (Bonferroni): looking twice, the
chance of crowning a leader no better than the champion stays at most the fixed test's. The
futility stop only ever keeps the champion, so it cannot add false crowns. Error rates, replies
per round and the fixed rule's, simulated on replies that are on or off target as the real ones
are: `bench/judge_rule.py`, in docs/results/candidates.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from crowd.evaluation import EvalSet, Evaluator, Progress
from crowd.metrics import LOWER_IS_BETTER, Score

CROWN_Z = 2.0
"""Standard errors a candidate must beat the champion by: with 3 candidates and no real gain, a
one-sided 2-sigma test crowns one in about 15 rounds instead of one in two."""
LOOK_SHARES = (0.25, 0.5, 1.0)  # the sequential judge's looks, as shares of S
MAX_SHARE = 2.0  # the extension: at most this many times S replies for the leader and champion
CROWNING_LOOKS = 2  # S and the extension
MIN_LOOK = 4  # replies: fewer give no standard error worth the name
DROP_T = 2.0  # a candidate this many paired SEs behind the leader is out
FUTILITY_T = 0.0  # a leader not ahead of the champion (net of the margin) stops the judging


@dataclass
class Verdict:
    """The judgement: every model's last score, the leader and whether it was crowned, and
    per look how many replies each model had and the leader's t statistic."""

    scores: dict[str, Score]
    leader: str | None
    crowned: bool
    looks: list[dict[str, object]] = field(default_factory=list)


class Judge(Protocol):
    def judge(
        self,
        evaluator: Evaluator,
        eval_set: EvalSet,
        champion: str,
        candidates: Sequence[str],
        margin: float,
        progress: Progress | None = None,
    ) -> Verdict: ...


def leader_of(scores: dict[str, Score], candidates: Sequence[str]) -> str | None:
    """The best-scoring candidate that has not collapsed, or None."""
    contenders = [c for c in candidates if not scores[c].collapsed]
    return max(contenders, key=lambda c: scores[c].oriented, default=None)


@dataclass(frozen=True)
class FixedJudge:
    """Every model on the evaluator's replies, one decision (the loop's rule before issue 28)."""

    crown_z: float = CROWN_Z

    def judge(self, evaluator, eval_set, champion, candidates, margin, progress=None) -> Verdict:
        models = [champion, *candidates]
        scores = dict(zip(models, evaluator.evaluate(eval_set, models, progress=progress)))
        leader = leader_of(scores, candidates)
        crowned = leader is not None and scores[leader].better_than(
            scores[champion], margin, self.crown_z
        )
        look = {"replies": scores[champion].n_items, "models": len(models), "leader": leader}
        return Verdict(scores, leader, crowned, [look])


@dataclass(frozen=True)
class SequentialJudge:
    """Judging in looks (see the module doc); preference rounds are judged as FixedJudge."""

    crown_z: float = CROWN_Z
    drop_t: float = DROP_T
    futility_t: float = FUTILITY_T

    def judge(self, evaluator, eval_set, champion, candidates, margin, progress=None) -> Verdict:
        if eval_set.task != "emotion" or not candidates:
            fixed = FixedJudge(self.crown_z)
            return fixed.judge(evaluator, eval_set, champion, candidates, margin, progress)
        samples = evaluator.samples
        budget = (1 + len(candidates)) * samples  # the fixed judge's replies
        verdict = Verdict({}, None, False)
        active = list(candidates)
        for n in looks(samples):
            models = [champion, *active]
            self._look(evaluator, eval_set, models, n, verdict, progress)
            if verdict.leader is None:
                return verdict
            active = self._survivors(verdict.scores, active, verdict.leader)
            t = self._decide(verdict, champion, margin, n, samples)
            if verdict.crowned or t <= self.futility_t:
                return verdict
        given = sum(score.n_items for score in verdict.scores.values())  # each model's last look
        more = extension(samples, budget - given)
        if more > samples:
            self._look(evaluator, eval_set, [champion, verdict.leader], more, verdict, progress)
            if verdict.leader is not None:  # not collapsed over its further replies
                self._decide(verdict, champion, margin, more, samples)
        return verdict

    def _look(self, evaluator, eval_set, models, n, verdict, progress) -> None:
        """`models` judged on the first `n` replies; the leader among them."""
        scores = evaluator.evaluate(eval_set, models, samples=n, progress=progress)
        verdict.scores.update(zip(models, scores))
        verdict.leader = leader_of(verdict.scores, models[1:])
        verdict.looks.append({"replies": n, "models": len(models), "leader": verdict.leader})

    def _decide(
        self, verdict: Verdict, champion: str, margin: float, n: int, samples: int
    ) -> float:
        """The leader's t over the champion at this look, kept in the look; crowned at a
        crowning look (S replies or more) when it reaches the boundary."""
        assert verdict.leader is not None
        t = t_ahead(verdict.scores[verdict.leader], verdict.scores[champion], margin)
        look = verdict.looks[-1]
        look["t"] = _round(t)
        if n >= samples:
            bound = crown_bound(self.crown_z, CROWNING_LOOKS, n)
            look["bound"] = round(bound, 3)
            verdict.crowned = t >= bound
        return t

    def _survivors(self, scores: dict[str, Score], active: list[str], leader: str) -> list[str]:
        """The leader and the candidates neither collapsed nor clearly behind it."""
        return [
            c
            for c in active
            if c == leader
            or (not scores[c].collapsed and t_ahead(scores[leader], scores[c]) <= self.drop_t)
        ]


def looks(samples: int) -> list[int]:
    """Replies per model at each look, for an evaluator of `samples` replies."""
    sizes = {max(MIN_LOOK, math.ceil(samples * share)) for share in LOOK_SHARES}
    return sorted(sizes)


def extension(samples: int, saved: int) -> int:
    """Replies per model at the extension look for the leader and the champion, given the
    replies `saved` within the budget: S plus half of them, at most `most_replies` (S: none)."""
    return min(most_replies(samples), samples + max(0, saved) // 2)


def most_replies(samples: int) -> int:
    """The most replies the sequential judge gives one model: MAX_SHARE x S."""
    return int(MAX_SHARE * samples)


def crown_bound(crown_z: float, n_looks: int, replies: int) -> float:
    """The t statistic a leader needs at a look of `replies`: Student's t quantile at the fixed
    rule's level Phi(-crown_z), shared among `n_looks` looks."""
    from scipy.stats import norm, t

    level = float(norm.sf(crown_z)) / n_looks
    return float(t.isf(level, max(1, replies - 1)))


def t_ahead(a: Score, b: Score, margin: float = 0.0) -> float:
    """How far `a` is ahead of `b`, net of `margin`, in standard errors of their paired
    difference over the replies both have (the same prompts and seeds); +-inf when every
    paired difference is the same."""
    mine, theirs = a.detail.get("distances") or [], b.detail.get("distances") or []
    n = min(len(mine), len(theirs))
    sign = -1.0 if LOWER_IS_BETTER[a.metric] else 1.0
    if n < 2:
        return (a.oriented - b.oriented - margin) / max(a.paired_se(b), 1e-12)
    diff = sign * (np.asarray(mine[:n]) - np.asarray(theirs[:n]))
    gain = float(diff.mean()) - margin
    se = float(diff.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return math.inf if gain > 0 else -math.inf
    return gain / se


def _round(value: float) -> float | str:
    return round(value, 3) if math.isfinite(value) else str(value)


def sequential_decision(
    scores: dict[str, Score], candidates: Sequence[str], champion: str, judging: Any
) -> tuple[str | None, bool]:
    """(leader, crowned) as `SequentialJudge` ended, from its final scores alone: the models of
    its last look are those with as many replies as the champion; its leader is crowned when
    its t statistic reaches that look's bound, and the look may crown (S replies or more; every
    earlier look stopped short of it, or the judge would have ended there). So the worker
    checks the job's decision (crowd.rounds.results.decide) without the looks. `judging`: the
    bundle's JudgingSettings."""
    last = scores[champion].n_items
    judged = [c for c in candidates if c in scores and scores[c].n_items == last]
    leader = leader_of(scores, judged)
    if leader is None or last < judging.samples:
        return leader, False
    bound = crown_bound(judging.crown_z, CROWNING_LOOKS, last)
    return leader, t_ahead(scores[leader], scores[champion], judging.win_margin) >= bound
