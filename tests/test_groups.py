"""Group assignment and regrouping (crowd.groups)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from crowd.groups import GROUPING_METHODS, assign_arrival, regroup


def people(n: int) -> list[str]:
    return [f"p{i:03d}" for i in range(n)]


def test_arrival_joins_a_smallest_group() -> None:
    rng = random.Random(0)
    assert assign_arrival([3, 1, 2], rng) == 1
    picks = Counter(assign_arrival([2, 1, 3, 1], rng) for _ in range(200))
    assert set(picks) == {1, 3}  # ties are broken at random, never toward a larger group
    assert min(picks.values()) > 60


def test_arrival_needs_a_group() -> None:
    with pytest.raises(ValueError, match="at least one group"):
        assign_arrival([], random.Random(0))


@pytest.mark.parametrize("method", GROUPING_METHODS)
@pytest.mark.parametrize(("n", "g"), [(10, 3), (11, 4), (7, 7), (100, 5), (3, 5), (25, 2)])
def test_every_method_gives_balanced_groups(method: str, n: int, g: int) -> None:
    crowd = people(n)
    rng = random.Random(n * 31 + g)
    points = {p: float(rng.randint(0, 20)) for p in crowd}
    for round_number in (0, 50, 99):
        groups = regroup(crowd, points, g, method, round_number, 100, rng)
        assert set(groups) == set(crowd)
        sizes = Counter(groups.values())
        assert set(sizes) <= set(range(g))
        counts = [sizes.get(k, 0) for k in range(g)]
        assert max(counts) - min(counts) <= 1


def test_regroup_is_deterministic_given_the_rng() -> None:
    crowd, points = people(20), {p: float(i % 7) for i, p in enumerate(people(20))}
    for method in GROUPING_METHODS:
        first = regroup(crowd, points, 4, method, 10, 100, random.Random(5))
        assert first == regroup(crowd, points, 4, method, 10, 100, random.Random(5))


def test_random_grouping_varies_between_rounds() -> None:
    rng = random.Random(1)
    seen = {
        tuple(sorted(regroup(people(12), {}, 3, "random", r, 10, rng).items())) for r in range(10)
    }
    assert len(seen) > 5


def is_sorted_partition(groups: dict[str, int], points: dict[str, float]) -> bool:
    """Group k holds the k-th run of participants by ascending points."""
    return all(points[a] <= points[b] for a in groups for b in groups if groups[a] < groups[b])


def test_epsilon_greedy_exploits_more_as_rounds_pass() -> None:
    crowd = people(12)
    points = {p: float(i) for i, p in enumerate(crowd)}  # distinct, so sorting is unambiguous
    rng = random.Random(2)

    def sorted_share(round_number: int) -> float:
        trials = [
            regroup(crowd, points, 3, "epsilon_greedy", round_number, 100, rng) for _ in range(400)
        ]
        return sum(is_sorted_partition(t, points) for t in trials) / len(trials)

    assert sorted_share(0) < 0.02  # round 0 always explores
    assert 0.5 < sorted_share(99) < 0.7  # late: exploit with probability 1 - 0.4


def test_interleaved_mixes_top_and_bottom_halves() -> None:
    crowd = people(12)
    points = {p: float(i) for i, p in enumerate(crowd)}
    top = set(crowd[6:])
    for seed in range(20):
        groups = regroup(crowd, points, 3, "interleaved", 5, 100, random.Random(seed))
        for k in range(3):
            members = [p for p, g in groups.items() if g == k]
            assert sum(p in top for p in members) == 2 and len(members) == 4


def test_regroup_refuses_bad_input() -> None:
    rng = random.Random(0)
    with pytest.raises(ValueError, match="unknown grouping method"):
        regroup(people(4), {}, 2, "kmeans", 0, 10, rng)
    with pytest.raises(ValueError, match="n_groups"):
        regroup(people(4), {}, 0, "random", 0, 10, rng)
    with pytest.raises(ValueError, match="distinct"):
        regroup(["a", "a", "b"], {}, 2, "random", 0, 10, rng)
