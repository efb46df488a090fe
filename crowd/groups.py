"""Groups: their names and colours, where a newcomer goes, and how the crowd is regrouped
between rounds.

Pure functions; randomness comes in as `rng`. Group sizes are always balanced: they differ by
at most one. The three regrouping methods are the paper's (experiment 2):

- random: a fresh random partition every round;
- epsilon_greedy: with probability max(0.4, 1 - round / total) a random partition, otherwise
  participants sorted by points (ascending, so group 0 holds the lowest) and cut into runs;
- interleaved: the top and bottom halves by points, each shuffled, dealt round-robin, so every
  group mixes strong and weak participants.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

GROUP_NAMES = (
    "Amber",
    "Blue",
    "Coral",
    "Dune",
    "Emerald",
    "Fern",
    "Gold",
    "Heather",
    "Indigo",
    "Jade",
    "Kiwi",
    "Lilac",
    "Mint",
    "Navy",
    "Olive",
    "Peach",
    "Quartz",
    "Rose",
    "Sky",
    "Teal",
    "Umber",
    "Violet",
    "Wheat",
    "Xanadu",
    "Yellow",
    "Zinc",
)
GROUP_COLOURS = (
    "#f59e0b",
    "#3b82f6",
    "#f87171",
    "#a16207",
    "#10b981",
    "#65a30d",
    "#eab308",
    "#a855f7",
    "#6366f1",
    "#14b8a6",
    "#84cc16",
    "#c084fc",
    "#34d399",
    "#1e3a8a",
    "#808000",
    "#fb923c",
    "#94a3b8",
    "#f43f5e",
    "#38bdf8",
    "#0d9488",
    "#92400e",
    "#7c3aed",
    "#d97706",
    "#16a34a",
    "#facc15",
    "#71717a",
)


def group_name(index: int) -> str:
    return GROUP_NAMES[index % len(GROUP_NAMES)]


UNION_NAME = "All groups"
MERGED_NAME = "Merged"


def candidate_name(kind: str | None, group_index: int | None) -> str:
    """How volunteers see a candidate: its group's name, or the union's or the merge's."""
    if kind == "union":
        return UNION_NAME
    if kind == "merged":
        return MERGED_NAME
    return group_name(group_index or 0)


def won_text(name: str) -> str:
    """'group Amber won', or what the union's or the merge's win reads as."""
    if name == UNION_NAME:
        return "the model trained on all groups' corrections together won"
    if name == MERGED_NAME:
        return "the merge of the groups' models won"
    return f"group {name} won"


def group_colour(index: int) -> str:
    return GROUP_COLOURS[index % len(GROUP_COLOURS)]


GROUPING_METHODS = ("random", "epsilon_greedy", "interleaved")
EPSILON_FLOOR = 0.4  # epsilon-greedy never explores less often than this (the paper's value)


def assign_arrival(group_sizes: Sequence[int], rng: random.Random) -> int:
    """Index of the group a newcomer joins: a smallest group, ties broken at random."""
    if not group_sizes:
        raise ValueError("there must be at least one group to join")
    smallest = min(group_sizes)
    return rng.choice([i for i, size in enumerate(group_sizes) if size == smallest])


def _cut(order: Sequence[str], n_groups: int) -> dict[str, int]:
    """Consecutive runs of `order`, the first len(order) % n_groups runs one longer."""
    base, extra = divmod(len(order), n_groups)
    groups: dict[str, int] = {}
    start = 0
    for g in range(n_groups):
        end = start + base + (1 if g < extra else 0)
        groups.update({p: g for p in order[start:end]})
        start = end
    return groups


def _by_points(
    participants: Sequence[str], points: Mapping[str, float], rng: random.Random
) -> list[str]:
    """Participants in ascending order of points; equal points in random order."""
    shuffled = list(participants)
    rng.shuffle(shuffled)
    return sorted(shuffled, key=lambda p: points.get(p, 0.0))  # sort is stable


def _random(participants: Sequence[str], n_groups: int, rng: random.Random) -> dict[str, int]:
    order = list(participants)
    rng.shuffle(order)
    return _cut(order, n_groups)


def _epsilon_greedy(
    participants: Sequence[str],
    points: Mapping[str, float],
    n_groups: int,
    round_number: int,
    total_rounds: int,
    rng: random.Random,
) -> dict[str, int]:
    explore = max(EPSILON_FLOOR, 1.0 - round_number / max(total_rounds, 1))
    if rng.random() < explore:
        return _random(participants, n_groups, rng)
    return _cut(_by_points(participants, points, rng), n_groups)


def _interleaved(
    participants: Sequence[str], points: Mapping[str, float], n_groups: int, rng: random.Random
) -> dict[str, int]:
    ranked = _by_points(participants, points, rng)
    half = len(ranked) // 2
    bottom, top = ranked[:half], ranked[half:]
    rng.shuffle(top)
    rng.shuffle(bottom)
    # The bottom half is dealt on from where the top half stopped (the paper restarts at group
    # 0, which can leave sizes two apart); the deal as a whole is round-robin, hence balanced.
    return {p: i % n_groups for i, p in enumerate(top + bottom)}


def regroup(
    participants: Sequence[str],
    points: Mapping[str, float],
    n_groups: int,
    method: str,
    round_number: int,
    total_rounds: int,
    rng: random.Random,
) -> dict[str, int]:
    """Participant -> group index in [0, n_groups), sizes differing by at most one.

    `points` are current totals (missing participants count as 0); `round_number` is 0-based
    out of `total_rounds` (it only matters to epsilon_greedy's exploration schedule).
    """
    if method not in GROUPING_METHODS:
        raise ValueError(
            f"unknown grouping method {method!r}; expected one of {', '.join(GROUPING_METHODS)}"
        )
    if n_groups < 1:
        raise ValueError(f"n_groups must be at least 1, got {n_groups}")
    if len(set(participants)) != len(participants):
        raise ValueError("participants must be distinct")
    if method == "random":
        return _random(participants, n_groups, rng)
    if method == "epsilon_greedy":
        return _epsilon_greedy(participants, points, n_groups, round_number, total_rounds, rng)
    return _interleaved(participants, points, n_groups, rng)
