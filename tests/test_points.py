"""Shapley machinery (crowd.shapley) and the points rules (crowd.points)."""

from __future__ import annotations

import json
from itertools import permutations

import numpy as np
import pytest

from crowd.points import (
    ContributionItem,
    PaperRule,
    RoundOutcome,
    ShapleyRule,
    get_rule,
    group_ranks,
)
from crowd.shapley import (
    FunctionGame,
    MeanVectorGame,
    Stopping,
    exact_owen,
    exact_shapley,
    owen,
    sampled_shapley,
    shapley,
)


def airport_game(costs: list[float]) -> FunctionGame:
    """A cost game: a coalition pays for the runway its largest plane needs."""
    return FunctionGame(len(costs), lambda s: max((costs[i] for i in s), default=0.0))


def airport_shapley(costs: list[float]) -> np.ndarray:
    """Closed form (Littlechild-Owen): each runway segment is shared by the planes using it."""
    c = [0.0, *sorted(costs)]
    n = len(costs)
    shares = [
        sum((c[k] - c[k - 1]) / (n - k + 1) for k in range(1, i + 1)) for i in range(1, n + 1)
    ]
    order = np.argsort(costs, kind="stable")
    phi = np.empty(n)
    phi[order] = shares
    return phi


def random_vector_game(n: int, seed: int, metric: str = "l2") -> MeanVectorGame:
    rng = np.random.default_rng(seed)
    return MeanVectorGame.one_each(rng.random((n, 6)), rng.random(6), metric)


def grand_minus_empty(game) -> float:
    masks = np.array([[True] * game.n_players, [False] * game.n_players])
    full, empty = game.values(masks)
    return float(full - empty)


# -- exact values on games with known Shapley values ------------------------------------------


def test_symmetric_voting_game_gives_everyone_one_nth() -> None:
    game = FunctionGame(7, lambda s: 1.0 if len(s) >= 4 else 0.0)
    np.testing.assert_allclose(exact_shapley(game), np.full(7, 1 / 7))


def test_weighted_voting_game_matches_hand_count() -> None:
    # Weights 3, 2, 1, 1 and quota 4. The 3 is pivotal when 1 to 3 votes came before it:
    # second or third in the order, 12 of 24 orders; each other player in 4 of 24.
    weights = [3, 2, 1, 1]
    game = FunctionGame(4, lambda s: 1.0 if sum(weights[i] for i in s) >= 4 else 0.0)
    np.testing.assert_allclose(exact_shapley(game), [12 / 24, 4 / 24, 4 / 24, 4 / 24])


def test_airport_game_matches_closed_form() -> None:
    costs = [5.0, 1.0, 3.0, 3.0, 8.0, 2.0]
    np.testing.assert_allclose(exact_shapley(airport_game(costs)), airport_shapley(costs))


def test_dot_game_matches_closed_form_even_when_sampled() -> None:
    # v(S) = mean(a_S), a = x . e: phi_i = (a_i + (a_i - mean of the others)(H_n - 1)) / n.
    n = 30
    game = random_vector_game(n, seed=4, metric="dot")
    a = game.vectors @ game.target
    others = (a.sum() - a) / (n - 1)
    expected = (a + (a - others) * (sum(1 / k for k in range(1, n + 1)) - 1)) / n
    estimate = sampled_shapley(game, np.random.default_rng(0), stopping=Stopping(relative=0.02))
    assert np.all(np.abs(estimate.values - expected) <= estimate.error)


# -- axioms -----------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["l2", "l1", "dot"])
def test_efficiency_exact_and_sampled(metric: str) -> None:
    game = random_vector_game(9, seed=1, metric=metric)
    total = grand_minus_empty(game)
    assert exact_shapley(game).sum() == pytest.approx(total)
    sampled = sampled_shapley(game, np.random.default_rng(2), stopping=Stopping(relative=0.2))
    assert sampled.values.sum() == pytest.approx(total)
    groups = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    assert exact_owen(game, groups).sum() == pytest.approx(total)


def test_symmetric_players_get_equal_values() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.random((6, 4))
    vectors[4] = vectors[1]  # players 1 and 4 are interchangeable
    phi = exact_shapley(MeanVectorGame.one_each(vectors, rng.random(4)))
    assert phi[1] == pytest.approx(phi[4])
    assert phi[0] != pytest.approx(phi[1])


def test_null_player_gets_zero() -> None:
    rng = np.random.default_rng(6)
    # Player 3 owns no vector (an item without a scorer vector): it never changes the mean.
    game = MeanVectorGame(rng.random((5, 4)), np.array([0, 1, 2, 4, 4]), 5, rng.random(4))
    phi = exact_shapley(game)
    assert phi[3] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.abs(np.delete(phi, 3)) > 1e-6)


def test_each_coalition_is_evaluated_once() -> None:
    seen: list[frozenset[int]] = []

    def utility(coalition: frozenset[int]) -> float:
        seen.append(coalition)
        return float(len(coalition) ** 2)

    exact_shapley(FunctionGame(8, utility))
    assert len(seen) == 2**8 == len(set(seen))


# -- sampling estimators ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["stratified", "antithetic"])
@pytest.mark.parametrize("seed", range(4))
def test_sampling_is_within_its_stated_error_on_random_10_player_games(method, seed) -> None:
    game = random_vector_game(10, seed=seed)
    exact = exact_shapley(game)
    estimate = sampled_shapley(
        game, np.random.default_rng(seed), method=method, stopping=Stopping(relative=0.05)
    )
    assert estimate.error.max() <= 0.05 * np.ptp(estimate.values) + 1e-12
    assert np.all(np.abs(estimate.values - exact) <= estimate.error)


def test_shapley_switches_to_sampling_above_the_exact_limit() -> None:
    game = random_vector_game(10, seed=9)
    assert shapley(game, np.random.default_rng(0)).method == "exact"
    sampled = shapley(game, np.random.default_rng(0), exact_limit=8)
    assert sampled.method == "stratified" and sampled.n_permutations > 0


def test_unknown_sampling_method_is_refused() -> None:
    with pytest.raises(ValueError, match="sampling method"):
        sampled_shapley(random_vector_game(5, 0), np.random.default_rng(0), method="naive")


# -- Owen values (Shapley with the groups as a priori unions) ---------------------------------


def owen_by_enumeration(game: MeanVectorGame, groups: list[list[int]]) -> np.ndarray:
    phi, count = np.zeros(game.n_players), 0
    for group_order in permutations(range(len(groups))):

        def orders(k: int):
            if k == len(group_order):  # noqa: B023 (used within this iteration)
                yield []
                return
            for inner in permutations(groups[group_order[k]]):  # noqa: B023
                for rest in orders(k + 1):
                    yield [*inner, *rest]

        for order in orders(0):
            perm = np.array(order)
            phi[perm] += np.diff(game.prefix_values(perm[None])[0])
            count += 1
    return phi / count


def test_exact_owen_matches_enumeration_and_sampling_is_within_error() -> None:
    game = random_vector_game(7, seed=3)
    labels = np.array([5, 5, 5, 1, 1, 2, 2])  # labels need not be 0..m-1
    expected = owen_by_enumeration(game, [[0, 1, 2], [3, 4], [5, 6]])
    np.testing.assert_allclose(exact_owen(game, labels), expected)
    sampled = owen(
        game, labels, np.random.default_rng(1), exact_limit=0, stopping=Stopping(relative=0.02)
    )
    assert np.all(np.abs(sampled.values - expected) <= sampled.error)


def test_owen_with_one_group_is_shapley() -> None:
    game = random_vector_game(8, seed=2)
    np.testing.assert_allclose(exact_owen(game, np.zeros(8, int)), exact_shapley(game))


# -- the paper's rule -------------------------------------------------------------------------


def outcome(improved: bool = True, task: str = "emotion", **kw) -> RoundOutcome:
    """Hand-worked round: 3 groups; group 1 scored best, then group 2, then group 0."""
    target = np.array([1.0, 0.0, 0.0])
    vectors = {
        "ann": [1, 0, 0],
        "bob": [0, 1, 0],
        "cy": [0.8, 0.2, 0],
        "dee": [0, 0, 1],
        "eve": [0.9, 0, 0.1],
    }
    groups = {"ann": 1, "bob": 0, "cy": 2, "dee": 2, "eve": 1}
    items = [ContributionItem(p, g, np.array(vectors[p], float), None) for p, g in groups.items()]
    members = {0: ["bob"], 1: ["ann", "eve"], 2: ["cy", "dee"]}
    base = dict(
        round_id=7,
        task=task,
        improved=improved,
        n_groups=3,
        group_scores={0: -0.9, 1: -0.1, 2: -0.5},
        members=members,
        items=items,
        target=target,
    )
    return RoundOutcome(**{**base, **kw})


def test_group_ranks_best_first_ties_by_index() -> None:
    assert group_ranks({0: 0.2, 1: 0.9, 2: 0.5}) == {1: 0, 2: 1, 0: 2}
    assert group_ranks({3: 1.0, 1: 1.0}) == {1: 0, 3: 1}


def test_paper_rule_reproduces_its_definition() -> None:
    awards = {a.participant_id: a for a in PaperRule().award(outcome())}
    # G = 3: rank 0 (group 1) earns 3, rank 1 (group 2) earns 2, rank 2 (group 0) earns 1.
    assert {p: a.amount for p, a in awards.items()} == {
        "ann": 3.0,
        "eve": 3.0,
        "cy": 2.0,
        "dee": 2.0,
        "bob": 1.0,
    }
    assert awards["cy"].reason == {
        "rule": "paper",
        "group_rank": 1,
        "n_groups": 3,
        "group_score": -0.5,
    }
    assert PaperRule().award(outcome(improved=False)) == []


def test_paper_rule_skips_groups_without_a_candidate() -> None:
    awards = PaperRule().award(outcome(group_scores={1: -0.1, 2: -0.5}))
    assert {a.participant_id: a.amount for a in awards} == {
        "ann": 3.0,
        "eve": 3.0,
        "cy": 2.0,
        "dee": 2.0,
    }


# -- the project's rule -----------------------------------------------------------------------


def test_shapley_rule_splits_the_round_by_owen_shares() -> None:
    rule = ShapleyRule()
    awards = {a.participant_id: a for a in rule.award(outcome())}
    assert sum(a.amount for a in awards.values()) == pytest.approx(2.0 * 5)  # (G + 1) / 2 each
    assert min(a.amount for a in awards.values()) >= 0.0
    # ann's correction is the target itself: the most valuable. bob's, alone in the worst
    # group and pointing away from the target, is the most harmful: it earns nothing.
    assert max(awards, key=lambda p: awards[p].amount) == "ann"
    assert awards["bob"].amount == 0.0 < awards["dee"].amount
    assert awards["ann"].reason["group_points"] > awards["cy"].reason["group_points"]
    reason = json.loads(json.dumps(awards["cy"].reason))
    assert reason["group_rank"] == 1 and reason["method"] == "exact"
    assert reason["share_of_group"] + json.loads(json.dumps(awards["dee"].reason))[
        "share_of_group"
    ] == pytest.approx(1.0)
    assert rule.award(outcome(improved=False)) == []


def test_shapley_rule_follows_the_values_it_reports() -> None:
    awards = ShapleyRule().award(outcome())
    values = np.array([a.reason["value"] for a in awards])
    amounts = np.array([a.amount for a in awards])
    assert np.corrcoef(values, amounts)[0, 1] == pytest.approx(1.0)  # affine in the values


def test_shapley_rule_is_reproducible_when_sampling() -> None:
    rng = np.random.default_rng(8)
    items = [ContributionItem(f"p{i}", i % 3, rng.random(5), None) for i in range(40)]
    members = {g: [f"p{i}" for i in range(40) if i % 3 == g] for g in range(3)}
    big = RoundOutcome(
        3, "emotion", True, 3, {0: 0.1, 1: 0.2, 2: 0.3}, members, items, rng.random(5)
    )
    first, again = ShapleyRule().award(big), ShapleyRule().award(big)
    assert [a.amount for a in first] == [a.amount for a in again]
    assert first[0].reason["method"] == "stratified"
    assert sum(a.amount for a in first) == pytest.approx(2.0 * 40)


def test_shapley_rule_preference_credits_learned_pairs() -> None:
    items = [
        ContributionItem("ann", 0, None, 0.4),
        ContributionItem("ann", 0, None, 0.1),
        ContributionItem("bob", 0, None, -0.3),
        ContributionItem("cy", 1, None, 0.2),
    ]
    pref = RoundOutcome(
        1, "preference", True, 2, {0: 0.6, 1: 0.5}, {0: ["ann", "bob"], 1: ["cy"]}, items, None
    )
    awards = {a.participant_id: a.amount for a in ShapleyRule().award(pref)}
    credit = {"ann": np.tanh(0.4) + np.tanh(0.1), "bob": 0.0, "cy": np.tanh(0.2)}
    total = sum(credit.values())
    assert awards == pytest.approx({p: 1.5 * 3 * c / total for p, c in credit.items()})


def test_shapley_rule_refuses_bad_outcomes() -> None:
    with pytest.raises(ValueError, match="no target"):
        ShapleyRule().award(outcome(target=None))
    with pytest.raises(ValueError, match="unknown task"):
        ShapleyRule().award(outcome(task="chess"))
    moved = outcome().items + [ContributionItem("ann", 0, np.ones(3), None)]
    with pytest.raises(ValueError, match="groups"):
        ShapleyRule().award(outcome(items=moved))
    short = outcome().items + [ContributionItem("fay", 0, np.ones(2), None)]
    with pytest.raises(ValueError, match="dimensions"):
        ShapleyRule().award(outcome(items=short))
    with pytest.raises(ValueError, match="metric"):
        ShapleyRule(metric="cosine")


def test_get_rule() -> None:
    assert get_rule("paper").name == "paper" and get_rule("shapley").name == "shapley"
    with pytest.raises(ValueError, match="unknown points rule"):
        get_rule("elo")
