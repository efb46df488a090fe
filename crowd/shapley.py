"""Shapley and Owen values of cooperative games: exact for small games, sampled for large ones.

A game has `n_players` and `values(masks)`: the utility of each coalition given as a row of a
boolean matrix (m, n_players) -> (m,). Games are evaluated in batches because every game this
project plays (the mean-vector game of the points rule and of the simulation) vectorises.

- `exact_shapley` / `exact_owen`: every coalition's utility computed exactly once into a
  bitmask-indexed table, then each player's weighted marginal contributions are read off it.
  Cost 2^n utilities.
- `sampled_shapley`: permutation sampling, with antithetic pairs (a permutation and its
  reverse) or stratified by position (the n cyclic shifts of a permutation); `owen` samples
  orders in which the groups (a priori unions) arrive whole. Both state an error that holds for
  all players at once and stop when it is small enough (`Stopping`).
- `MeanVectorGame`: v(S) = closeness of the mean of S's vectors to a target, with a fast path
  for the prefixes of many permutations (cumulative sums).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import factorial
from typing import Protocol

import numpy as np
from scipy.stats import t as student_t

METRICS = ("l2", "l1", "dot")
EXACT_LIMIT = 14  # largest game solved exactly by default: 2^14 utilities, a few ms
_CHUNK = 1 << 15  # coalitions evaluated per batch of the exact table, bounds memory


class Game(Protocol):
    @property
    def n_players(self) -> int: ...

    def values(self, masks: np.ndarray) -> np.ndarray:
        """Utility of each coalition; masks is bool (m, n_players), result float (m,)."""
        ...


@dataclass(frozen=True)
class FunctionGame:
    """A game from any function of a coalition (a frozenset of player indices)."""

    n_players: int
    utility: Callable[[frozenset[int]], float]

    def values(self, masks: np.ndarray) -> np.ndarray:
        return np.array([self.utility(frozenset(np.flatnonzero(row).tolist())) for row in masks])


def score(points: np.ndarray, target: np.ndarray, metric: str) -> np.ndarray:
    """Closeness of each row of `points` to `target`, oriented so that higher is better:
    l2 -> minus the Euclidean distance, l1 -> minus the Manhattan distance, dot -> dot product."""
    if metric == "l2":
        return -np.linalg.norm(points - target, axis=-1)
    if metric == "l1":
        return -np.abs(points - target).sum(axis=-1)
    if metric == "dot":
        return points @ target
    raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")


@dataclass(frozen=True)
class MeanVectorGame:
    """v(S) = score(mean of S's vectors, target); v(empty) = score(zero vector, target).

    The paper's reference game (experiment 2) and the emotion task's points utility. A player
    may own several vectors (several corrections): `owner[k]` is the player of `vectors[k]`.
    """

    vectors: np.ndarray  # (k, d)
    owner: np.ndarray  # (k,) int, player index of each vector
    n_players: int
    target: np.ndarray  # (d,)
    metric: str = "l2"

    @classmethod
    def one_each(
        cls, vectors: np.ndarray, target: np.ndarray, metric: str = "l2"
    ) -> MeanVectorGame:
        """The game where player i owns exactly vectors[i]."""
        vectors = np.asarray(vectors, dtype=float)
        return cls(
            vectors, np.arange(len(vectors)), len(vectors), np.asarray(target, float), metric
        )

    def _player_sums(self) -> tuple[np.ndarray, np.ndarray]:
        sums = np.zeros((self.n_players, self.vectors.shape[1]))
        np.add.at(sums, self.owner, self.vectors)
        return sums, np.bincount(self.owner, minlength=self.n_players).astype(float)

    def _score_in_place(self, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Score of each coalition from its vector sum and count; overwrites `sums` (these
        arrays are the bulk of the sampler's work, and in-place steps halve its time)."""
        sums /= np.maximum(counts, 1.0)[..., None]  # an empty coalition's mean is 0
        if self.metric == "dot":
            return sums @ self.target
        sums -= self.target
        if self.metric == "l2":
            return -np.sqrt(np.einsum("...d,...d->...", sums, sums))
        if self.metric == "l1":
            return -np.abs(sums, out=sums).sum(axis=-1)
        raise ValueError(f"unknown metric {self.metric!r}; expected one of {', '.join(METRICS)}")

    def values(self, masks: np.ndarray) -> np.ndarray:
        sums, counts = self._player_sums()
        weights = masks.astype(float)
        return self._score_in_place(weights @ sums, weights @ counts)

    def prefix_values(self, perms: np.ndarray) -> np.ndarray:
        """Utilities of every prefix of each permutation: (m, n) -> (m, n + 1), by cumulative
        sums, O(m n d) instead of O(m n^2 d) through `values`."""
        sums, counts = self._player_sums()
        inner = self._score_in_place(
            np.cumsum(sums[perms], axis=1), np.cumsum(counts[perms], axis=1)
        )
        empty = self._score_in_place(np.zeros((1, sums.shape[1])), np.zeros(1))
        return np.concatenate([np.broadcast_to(empty, (len(perms), 1)), inner], axis=1)


def prefix_values(game: Game, perms: np.ndarray) -> np.ndarray:
    """Utilities of the n + 1 prefixes of each permutation (m, n) -> (m, n + 1)."""
    fast = getattr(game, "prefix_values", None)
    if fast is not None:
        return fast(perms)
    m, n = perms.shape
    ranks = np.empty_like(perms)
    np.put_along_axis(ranks, perms, np.arange(n)[None, :].repeat(m, 0), axis=1)
    masks = ranks[:, None, :] < np.arange(n + 1)[None, :, None]  # (m, n + 1, n)
    return game.values(masks.reshape(-1, n)).reshape(m, n + 1)


def coalition_table(game: Game) -> np.ndarray:
    """v[b] for every bitmask b in [0, 2^n): bit i set means player i is in the coalition.
    Each coalition's utility is computed exactly once."""
    n = game.n_players
    table = np.empty(1 << n)
    bits = np.arange(n)
    for start in range(0, 1 << n, _CHUNK):
        idx = np.arange(start, min(start + _CHUNK, 1 << n))
        table[idx] = game.values(((idx[:, None] >> bits) & 1).astype(bool))
    return table


def exact_shapley(game: Game) -> np.ndarray:
    """Exact Shapley values, phi_i = sum over S not containing i of
    |S|! (n - |S| - 1)! / n! * (v(S + i) - v(S)). Sums to v(N) - v(empty)."""
    n = game.n_players
    if n > 24:
        raise ValueError(f"exact Shapley over {n} players needs 2^{n} utilities; sample instead")
    table = coalition_table(game)
    idx = np.arange(1 << n)
    size = np.zeros(1 << n, dtype=int)
    for i in range(n):
        size += (idx >> i) & 1
    weight = np.array([factorial(k) * factorial(n - k - 1) / factorial(n) for k in range(n)])
    phi = np.empty(n)
    for i in range(n):
        without = idx[(idx >> i) & 1 == 0]
        phi[i] = weight[size[without]] @ (table[without | (1 << i)] - table[without])
    return phi


@dataclass(frozen=True)
class Estimate:
    """Attributions with their stated error: |estimate - exact| <= error for every player at
    once, with the confidence of the `Stopping` used (normal approximation). Exact: error 0."""

    values: np.ndarray
    error: np.ndarray
    n_permutations: int
    method: str  # 'exact' | 'antithetic' | 'stratified'


@dataclass(frozen=True)
class Stopping:
    """When sampling stops: every player's stated error is at most `tolerance`, or, with
    tolerance None, at most `relative` times the spread (max - min) of the estimates; or
    `max_permutations` have been used, whatever the error (the error then says so).

    The stated error is t standard errors of the mean over k independent units, t the Student
    quantile (k - 1 degrees of freedom) chosen so that all n players are inside their error
    together with probability `confidence` (Bonferroni: two-sided 1 - (1 - confidence) / n per
    player)."""

    tolerance: float | None = None
    relative: float = 0.01
    confidence: float = 0.999
    min_units: int = 16
    max_permutations: int = 200_000

    def quantile(self, n_players: int, units: int) -> float:
        tail = (1.0 - self.confidence) / (2.0 * max(n_players, 1))
        return float(student_t.ppf(1.0 - tail, df=max(units - 1, 1)))


# A unit sampler draws `count` independent units, each a small set of permutations whose mean
# marginal contributions are an unbiased estimate: shape (count, permutations per unit, n).
UnitSampler = Callable[[int, np.random.Generator], np.ndarray]
_BATCH_PREFIXES = 1 << 16  # prefixes evaluated per batch, bounds memory to some 10 MB


def shapley_units(n: int, method: str = "stratified") -> UnitSampler:
    """Shapley units: 'antithetic' = a random permutation and its reverse; 'stratified' = the n
    cyclic shifts of a random permutation, so each player takes each position exactly once (the
    position-0 term v({i}) - v(empty), often the largest, is then exact in every unit)."""
    if method not in ("antithetic", "stratified"):
        raise ValueError(f"unknown sampling method {method!r}; use 'antithetic' or 'stratified'")
    shifts = (np.arange(n)[:, None] + np.arange(n)[None, :]) % n

    def draw(count: int, rng: np.random.Generator) -> np.ndarray:
        base = rng.permuted(np.broadcast_to(np.arange(n), (count, n)), axis=1)
        if method == "antithetic":
            return np.stack([base, base[:, ::-1]], axis=1)
        return base[:, shifts]

    return draw


def _group_labels(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group labels -> (dense index 0..m-1 per player, size of each group)."""
    _, dense = np.unique(np.asarray(groups), return_inverse=True)
    return dense, np.bincount(dense)


def owen_units(groups: np.ndarray) -> UnitSampler:
    """Owen units for a priori unions `groups` (a label per player): orders in which each group
    arrives whole, in random order, with its members in random order. Stratified: a unit holds
    every cyclic shift of the group order combined with every cyclic shift inside the groups."""
    label, size = _group_labels(groups)
    n, m, longest = len(label), len(size), int(size.max())
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    group_shift = np.arange(m)[:, None, None]
    member_shift = np.arange(longest)[None, :, None]

    def draw(count: int, rng: np.random.Generator) -> np.ndarray:
        group_rank = np.argsort(rng.random((count, m)), axis=1).argsort(axis=1)
        by_group = np.argsort(label[None, :] + rng.random((count, n)), axis=1)
        member_rank = np.empty_like(by_group)
        np.put_along_axis(member_rank, by_group, np.arange(n)[None, :].repeat(count, 0), axis=1)
        member_rank -= start[label][None, :]
        g_pos = (group_rank[:, label][:, None, None, :] + group_shift[None]) % m
        i_pos = (member_rank[:, None, None, :] + member_shift[None]) % size[label]
        return np.argsort(g_pos * n + i_pos, axis=-1).reshape(count, m * longest, n)

    return draw


def _mean_units(game: Game, rng: np.random.Generator, draw: UnitSampler, count: int) -> np.ndarray:
    """`count` independent unit estimates, shape (count, n), from one batched evaluation."""
    n = game.n_players
    units = draw(count, rng)
    marginal = np.diff(prefix_values(game, units.reshape(-1, n)), axis=1)  # by position
    slot = np.arange(count)[:, None, None] * n + units
    sums = np.bincount(slot.ravel(), weights=marginal.ravel(), minlength=count * n)
    return sums.reshape(count, n) / units.shape[1]


def sample_values(
    game: Game,
    rng: np.random.Generator,
    draw: UnitSampler,
    method: str,
    stopping: Stopping = Stopping(),
) -> Estimate:
    """Mean marginal contributions over independent units, drawn in batches that double the
    sample each pass, until `stopping` says so. Efficiency holds exactly: each permutation's
    marginals sum to v(N) - v(empty), hence so does every average of them."""
    n = game.n_players
    per_unit = draw(1, rng).shape[1]
    max_units = max(stopping.min_units, stopping.max_permutations // per_unit)
    batch_cap = max(1, _BATCH_PREFIXES // (per_unit * (n + 1)))
    total, total_sq, units, batch = np.zeros(n), np.zeros(n), 0, stopping.min_units
    while True:
        sample = _mean_units(game, rng, draw, batch)
        total, total_sq, units = total + sample.sum(0), total_sq + (sample**2).sum(0), units + batch
        mean = total / units
        variance = np.maximum(total_sq - units * mean**2, 0.0) / max(units - 1, 1)
        error = stopping.quantile(n, units) * np.sqrt(variance / units)
        bound = stopping.tolerance
        if bound is None:
            bound = stopping.relative * float(np.ptp(mean))
        if error.max() <= bound or units >= max_units:
            return Estimate(mean, error, units * per_unit, method)
        batch = min(units, batch_cap, max_units - units)


def sampled_shapley(
    game: Game,
    rng: np.random.Generator,
    *,
    method: str = "stratified",
    stopping: Stopping = Stopping(),
) -> Estimate:
    """Permutation-sampling Shapley values (antithetic or stratified) with a stopping rule."""
    return sample_values(game, rng, shapley_units(game.n_players, method), method, stopping)


def shapley(
    game: Game,
    rng: np.random.Generator,
    *,
    exact_limit: int = EXACT_LIMIT,
    stopping: Stopping = Stopping(),
) -> Estimate:
    """Exact values when the game has at most `exact_limit` players, else stratified sampling."""
    if game.n_players <= exact_limit:
        return Estimate(exact_shapley(game), np.zeros(game.n_players), 0, "exact")
    return sampled_shapley(game, rng, stopping=stopping)


def _subset_table(bitmasks: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Every union of a subset of `bitmasks` and the subset's size."""
    unions, sizes = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    for mask in bitmasks:
        unions, sizes = np.concatenate([unions, unions | mask]), np.concatenate([sizes, sizes + 1])
    return unions, sizes


def _order_weight(sizes: np.ndarray, total: int) -> np.ndarray:
    """Probability that exactly the `sizes` others precede a given one of `total` in a random
    order, for one particular such set: s! (total - s - 1)! / total!."""
    w = [factorial(s) * factorial(total - s - 1) / factorial(total) for s in range(total)]
    return np.asarray(w)[sizes]


def exact_owen(game: Game, groups: np.ndarray) -> np.ndarray:
    """Exact Owen values (Shapley values with a priori unions `groups`): groups arrive whole in
    random order, members in random order; phi_i = expected marginal contribution. Reads a
    table in which each coalition's utility was computed once. Sums to v(N) - v(empty); with a
    single group it is the Shapley value."""
    label, size = _group_labels(groups)
    table = coalition_table(game)
    group_mask = [int(sum(1 << i for i in np.flatnonzero(label == k))) for k in range(len(size))]
    phi = np.zeros(game.n_players)
    for k in range(len(group_mask)):
        unions, n_groups = _subset_table([g for j, g in enumerate(group_mask) if j != k])
        union_w = _order_weight(n_groups, len(size))
        for i in np.flatnonzero(label == k):
            mates, n_mates = _subset_table(
                [1 << int(j) for j in np.flatnonzero(label == k) if j != i]
            )
            before = unions[:, None] | mates[None, :]
            weight = union_w[:, None] * _order_weight(n_mates, int(size[k]))[None, :]
            phi[i] = (weight * (table[before | (1 << int(i))] - table[before])).sum()
    return phi


def owen(
    game: Game,
    groups: np.ndarray,
    rng: np.random.Generator,
    *,
    exact_limit: int = EXACT_LIMIT,
    stopping: Stopping = Stopping(),
) -> Estimate:
    """Owen values: exact up to `exact_limit` players, else stratified sampling."""
    if len(groups) != game.n_players:
        raise ValueError(f"{len(groups)} group labels for {game.n_players} players")
    if game.n_players <= exact_limit:
        return Estimate(exact_owen(game, groups), np.zeros(game.n_players), 0, "exact")
    return sample_values(game, rng, owen_units(groups), "stratified", stopping)
