"""Points: what each volunteer earns for a round, and why.

Two rules, both pure functions of a `RoundOutcome` (the round code builds it; the ledger stores
each `Award` with its `reason`, which the volunteer is shown):

- `PaperRule` (the baseline, Crowd-SFT paper): in a round that improved the model, every member
  of the group ranked r (0-based) of G earns G - r. Members of a group cannot be told apart,
  which is why it tracks Shapley values poorly in large crowds.
- `ShapleyRule` (the project's rule): the round's points are split among the round's
  contributors by their Owen values (Shapley values with the groups as a priori unions) in a
  cheap game over their accepted corrections. A group's points are its Shapley value in the game
  between groups; inside the group, they are split by the members' shares. Under random,
  balanced groups the Owen value is, in expectation, exactly the Shapley value of the whole
  crowd, so points accumulated over rounds track each volunteer's Shapley value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np

from crowd.shapley import EXACT_LIMIT, METRICS, Estimate, MeanVectorGame, Stopping, owen
from storage.vocabulary import TASKS


@dataclass(frozen=True)
class ContributionItem:
    """One accepted training correction of this round."""

    participant_id: str
    group_index: int
    vector: np.ndarray | None  # emotion task: scorer's emotion vector of the correction's target
    margin: float | None  # preference task: margin gain (nats/token) the pair taught; see below


@dataclass(frozen=True)
class RoundOutcome:
    round_id: int
    task: str  # 'emotion' | 'preference'
    improved: bool  # a candidate was crowned (it beat the champion)
    n_groups: int
    group_scores: dict[int, float]  # groups that produced a candidate; higher is better
    members: dict[int, list[str]]  # contributing members per group (>= 1 accepted correction)
    items: list[ContributionItem]
    target: np.ndarray | None  # emotion target vector; None for preference


@dataclass(frozen=True)
class Award:
    participant_id: str
    group_index: int | None  # None: not for a group's work (a review award)
    amount: float
    reason: dict = field(default_factory=dict)  # JSON-serialisable; shown to the volunteer


class PointsRule(Protocol):
    @property
    def name(self) -> str: ...

    def award(self, outcome: RoundOutcome) -> list[Award]: ...


def group_ranks(group_scores: Mapping[int, float]) -> dict[int, int]:
    """0-based rank of each scored group, best score first; equal scores by group index."""
    order = sorted(group_scores, key=lambda g: (-group_scores[g], g))
    return {g: r for r, g in enumerate(order)}


class PaperRule:
    """The paper's rule: in an improving round, the group ranked r of G gives G - r points to
    each member; groups without a candidate and rounds without improvement give nothing."""

    name: ClassVar[str] = "paper"

    def award(self, outcome: RoundOutcome) -> list[Award]:
        if not outcome.improved:
            return []
        ranks = group_ranks(outcome.group_scores)
        awards = []
        for g, rank in sorted(ranks.items(), key=lambda item: item[1]):
            reason = {
                "rule": self.name,
                "group_rank": rank,
                "n_groups": outcome.n_groups,
                "group_score": float(outcome.group_scores[g]),
            }
            amount = float(outcome.n_groups - rank)
            awards += [Award(p, g, amount, dict(reason)) for p in outcome.members.get(g, [])]
        return awards


def _contributors(outcome: RoundOutcome) -> tuple[list[str], np.ndarray]:
    """Contributors in order of first item, and each one's group; a contributor with items in
    two groups is an error (groups are sticky within a round)."""
    group_of: dict[str, int] = {}
    for item in outcome.items:
        known = group_of.setdefault(item.participant_id, item.group_index)
        if known != item.group_index:
            raise ValueError(
                f"participant {item.participant_id!r} has items in groups "
                f"{known} and {item.group_index} of round {outcome.round_id}"
            )
    return list(group_of), np.array(list(group_of.values()))


def _shares(values: np.ndarray) -> np.ndarray:
    """Fractions of the round's points, >= 0, summing to 1. When some contributions hurt
    (negative values), all values are first shifted by the same amount so that the most harmful
    one earns nothing: points never go negative and stay an affine function of value."""
    shifted = values - min(0.0, float(values.min()))
    total = float(shifted.sum())
    if total <= 0.0:
        return np.full(len(values), 1.0 / len(values))
    return shifted / total


@dataclass(frozen=True)
class ShapleyRule:
    """The project's rule. In a round that improved the model, the round earns
    `points_per_contributor` (default (G + 1) / 2, the paper rule's average) times the number of
    contributors, split by `_shares` of the contributors' Owen values in the task's game:

    - emotion: v(S) = closeness (`metric`, higher is better) of the mean emotion vector of S's
      corrections to the target; v(empty) = closeness of the zero vector (the paper's
      reference game). Exact up to `exact_limit` contributors, else sampled until every
      contributor's value is within 20 % of the values' spread, all at once with 99.9 %
      confidence (`stopping`; a typical error is a quarter of that). The error is in the reason.
    - preference: v(S) = sum over S's pairs of c(m) = s * tanh(max(m, 0) / s), m the pair's
      margin gain and s = `margin_scale`. A pair's margin gain measures how far the crowned model
      learned that pair; we have no measure of how pairs interact, so the game is additive and
      each contributor's value is exactly the credit of their own pairs. Clipping at 0 means a
      pair the model did not learn earns nothing but costs nothing (the loss may come from other
      people's data); the tanh caps one pair's credit at s, so a single memorised pair cannot
      outweigh many learned ones, while small gains count almost linearly.

    Randomness (sampling) is seeded by (seed, round_id): an award can be recomputed exactly.
    """

    name: ClassVar[str] = "shapley"
    metric: str = "l2"
    points_per_contributor: float | None = None
    margin_scale: float = 1.0
    exact_limit: int = EXACT_LIMIT
    stopping: Stopping = Stopping(relative=0.2)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; expected one of {METRICS}")

    def award(self, outcome: RoundOutcome) -> list[Award]:
        if outcome.task not in TASKS:
            raise ValueError(f"unknown task {outcome.task!r}; expected one of {TASKS}")
        if not outcome.improved or not outcome.items:
            return []
        players, groups = _contributors(outcome)
        estimate = self.values(outcome, players, groups)
        shares = _shares(estimate.values)
        per_head = self.points_per_contributor or (outcome.n_groups + 1) / 2
        pot = per_head * len(players)
        return self._awards(outcome, players, groups, estimate, shares, pot)

    def values(self, outcome: RoundOutcome, players: list[str], groups: np.ndarray) -> Estimate:
        """Each contributor's Owen value in the task's game (see the class docstring)."""
        if outcome.task == "preference":
            return Estimate(self._pair_credit(outcome, players), np.zeros(len(players)), 0, "exact")
        if outcome.target is None:
            raise ValueError(f"emotion round {outcome.round_id} has no target vector")
        index = {p: i for i, p in enumerate(players)}
        scored = [it for it in outcome.items if it.vector is not None]
        vectors = [np.asarray(it.vector, float).ravel() for it in scored]
        if any(len(v) != len(outcome.target) for v in vectors):
            raise ValueError(
                f"round {outcome.round_id}: emotion vectors must have the "
                f"target's {len(outcome.target)} dimensions"
            )
        matrix = np.array(vectors).reshape(len(scored), len(outcome.target))
        owner = np.array([index[it.participant_id] for it in scored], dtype=int)
        game = MeanVectorGame(
            matrix,
            owner,
            len(players),
            np.asarray(outcome.target, float),
            self.metric,
        )
        rng = np.random.default_rng([self.seed, abs(outcome.round_id)])
        return owen(game, groups, rng, exact_limit=self.exact_limit, stopping=self.stopping)

    def _pair_credit(self, outcome: RoundOutcome, players: list[str]) -> np.ndarray:
        index = {p: i for i, p in enumerate(players)}
        credit = np.zeros(len(players))
        s = self.margin_scale
        for item in outcome.items:
            if item.margin is not None:
                credit[index[item.participant_id]] += s * np.tanh(max(item.margin, 0.0) / s)
        return credit

    def _awards(
        self,
        outcome: RoundOutcome,
        players: list[str],
        groups: np.ndarray,
        estimate: Estimate,
        shares: np.ndarray,
        pot: float,
    ) -> list[Award]:
        ranks = group_ranks(outcome.group_scores)
        n_items = {p: 0 for p in players}
        for item in outcome.items:
            n_items[item.participant_id] += 1
        awards = []
        for i, (player, g) in enumerate(zip(players, groups.tolist())):
            group_share = float(shares[groups == g].sum())
            group_score = outcome.group_scores.get(g)
            reason = {
                "rule": self.name,
                "task": outcome.task,
                "method": estimate.method,
                "group_rank": ranks.get(g),
                "n_groups": outcome.n_groups,
                "group_score": None if group_score is None else float(group_score),
                "round_points": round(pot, 6),
                "group_points": round(pot * group_share, 6),
                "share_of_round": round(float(shares[i]), 6),
                "share_of_group": round(float(shares[i]) / group_share, 6) if group_share else 0.0,
                "value": round(float(estimate.values[i]), 6),
                "value_error": round(float(estimate.error[i]), 6),
                "items": n_items[player],
            }
            awards.append(Award(player, g, float(pot * shares[i]), reason))
        return awards


RULES: dict[str, PointsRule] = {"paper": PaperRule(), "shapley": ShapleyRule()}


def get_rule(name: str) -> PointsRule:
    """The points rule called `name` ('paper' or 'shapley', with default settings)."""
    if name not in RULES:
        raise ValueError(f"unknown points rule {name!r}; expected one of {', '.join(RULES)}")
    return RULES[name]


REVIEW_POINT = 0.1  # per review that agrees with the crowd's final verdict
REVIEW_POINTS_MAX = 1.0  # per reviewer per round: reviewing is worth less than correcting


def review_awards(reviews: list[tuple[str, str, str | None]]) -> list[Award]:
    """Points for the reviews given in a round: `REVIEW_POINT` for each one whose verdict
    matches the consensus its correction has reached (None: no consensus yet, nothing either
    way), at most `REVIEW_POINTS_MAX` per reviewer. `reviews`: (reviewer, verdict, consensus)."""
    tally: dict[str, list[int]] = {}
    for reviewer, verdict, consensus in reviews:
        if consensus is not None:
            agreed, decided = tally.setdefault(reviewer, [0, 0])
            tally[reviewer] = [agreed + (verdict == consensus), decided + 1]
    return [
        Award(
            reviewer,
            None,
            min(REVIEW_POINTS_MAX, REVIEW_POINT * agreed),
            {"rule": "review", "agreeing_reviews": agreed, "decided_reviews": decided},
        )
        for reviewer, (agreed, decided) in tally.items()
        if agreed
    ]
