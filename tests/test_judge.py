"""The judges (crowd.rounds.judge): the sequential judge stops early when the lead is clear
either way, drops candidates clearly behind, goes on to its cap when the lead is unclear, keeps
the paired design (each look extends the same prompts and seeds), and never crowns what the
fixed judge's test would not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crowd.evaluation import EvalSet, Evaluator, Score
from crowd.rounds.judge import FixedJudge, SequentialJudge, crown_bound, extension, looks
from tests.test_evaluation import CHAT, LengthScorer, adapter

# graded: replies of different lengths land at different distances under LengthScorer
TARGET = EvalSet("emotion", prompts=[CHAT], target=np.linspace(0, 0.1, 28), scorer=LengthScorer())


class ScriptedEvaluator:
    """A real implementation of the evaluator's judging protocol (`samples`, `evaluate`) over
    fixed per-model distance sequences: reply j of a model always scores the same, as the
    real evaluator's seeded reply j does; records how many replies each model was given."""

    def __init__(self, distances: dict[str, list[float]], samples: int):
        self.distances, self.samples = distances, samples
        self.given: dict[str, int] = {}

    def evaluate(self, eval_set, adapters, samples=None, progress=None):
        n = samples or self.samples
        if progress is not None:
            progress(len(adapters), len(adapters))
        out = []
        for name in adapters:
            mine = self.distances[name][:n]
            self.given[name] = max(self.given.get(name, 0), n)
            detail = {"distances": mine, "distinct": 1.0, "sd": float(np.std(mine, ddof=1))}
            out.append(Score("emotion_l2", float(np.mean(mine)), None, n, detail))
        return out


def noisy(mean: float, seed: int, n: int = 100) -> list[float]:
    return list(mean + np.random.default_rng(seed).normal(0, 0.3, n))


def test_looks_and_bounds():
    assert looks(24) == [6, 12, 24] and looks(50) == [13, 25, 50] and looks(4) == [4]
    # the extension: S plus half the replies saved within the fixed judge's budget, up to 2S
    assert extension(24, 0) == 24 and extension(24, 18) == 33 and extension(24, 500) == 48
    # Bonferroni over the two crowning looks at the fixed rule's level; Student's t
    assert crown_bound(2.0, 2, 48) > 2.0 and crown_bound(2.0, 2, 24) > crown_bound(2.0, 2, 48)


def test_a_clear_winner_is_crowned_on_s_replies_and_the_rest_dropped_early():
    """Early looks save (the candidate far behind stops at 6 replies) but never crown: the new
    champion is judged on the fixed judge's S replies, as many as the collapse rule saw."""
    scripted = ScriptedEvaluator(
        {"champ": noisy(1.0, 0), "good": noisy(0.2, 1), "meh": noisy(1.0, 2)}, samples=24
    )
    verdict = SequentialJudge().judge(scripted, TARGET, "champ", ["good", "meh"], 0.0)
    assert verdict.crowned and verdict.leader == "good"
    assert [look["replies"] for look in verdict.looks] == [6, 12, 24]
    assert "bound" not in verdict.looks[0] and verdict.looks[-1]["t"] >= verdict.looks[-1]["bound"]
    assert scripted.given == {"champ": 24, "good": 24, "meh": 6}  # the fixed judge: 72


def test_a_leader_that_collapses_by_s_replies_is_not_crowned():
    """Distinct at the first look, one phrase by S replies (the fear study's union candidate):
    the collapse rule, seeing all S, keeps the champion."""
    scripted = ScriptedEvaluator({"champ": noisy(1.0, 0), "phrase": [0.0] * 100}, samples=24)
    evaluate = scripted.evaluate

    def narrowing(eval_set, adapters, samples=None, progress=None):
        scores = evaluate(eval_set, adapters, samples, progress)
        distinct = 1.0 if (samples or 24) < 24 else 0.4
        return [
            Score(s.metric, s.value, s.loss, s.n_items, {**s.detail, "distinct": distinct})
            if name == "phrase"
            else s
            for name, s in zip(adapters, scores)
        ]

    scripted.evaluate = narrowing  # type: ignore[method-assign]
    verdict = SequentialJudge().judge(scripted, TARGET, "champ", ["phrase"], 0.0)
    assert not verdict.crowned and verdict.leader is None


def test_candidates_no_better_than_the_champion_stop_at_the_first_look():
    scripted = ScriptedEvaluator(
        {"champ": noisy(0.5, 0), "worse": noisy(1.0, 1), "same": noisy(0.5, 0)}, samples=24
    )
    verdict = SequentialJudge().judge(scripted, TARGET, "champ", ["worse", "same"], 0.0)
    assert not verdict.crowned and len(verdict.looks) == 1
    assert sum(scripted.given.values()) == 18  # the fixed judge: 72 replies


def test_an_unclear_lead_goes_on_with_the_leader_alone_within_the_fixed_budget():
    """A small true gain: the leader and the champion get more replies look after look, past S
    with what dropping the candidate far behind saved; never more replies in all than the
    fixed judge (3 models x 24)."""
    champion = noisy(0.60, 0)
    close = [d - 0.07 for d in champion]  # ahead by 0.07, with some noise of its own
    close = [c + e for c, e in zip(close, np.random.default_rng(5).normal(0, 0.12, 100))]
    scripted = ScriptedEvaluator(
        {"champ": champion, "close": close, "far": noisy(1.6, 2)}, samples=24
    )
    judge = SequentialJudge(crown_z=4.0)  # short of the boundary at S, past it at 33
    verdict = judge.judge(scripted, TARGET, "champ", ["close", "far"], 0.0)
    assert verdict.leader == "close" and verdict.crowned
    assert [look["replies"] for look in verdict.looks] == [6, 12, 24, 33]
    assert scripted.given == {"champ": 33, "close": 33, "far": 6}
    assert sum(scripted.given.values()) <= 3 * 24
    at_s, last = verdict.looks[2], verdict.looks[-1]
    assert at_s["t"] < at_s["bound"] and last["t"] >= last["bound"] > 4.0


def test_the_margin_is_part_of_the_test():
    scripted = ScriptedEvaluator({"champ": noisy(1.0, 0), "good": noisy(0.7, 1)}, samples=24)
    assert SequentialJudge().judge(scripted, TARGET, "champ", ["good"], 0.0).crowned
    scripted = ScriptedEvaluator({"champ": noisy(1.0, 0), "good": noisy(0.7, 1)}, samples=24)
    assert not SequentialJudge().judge(scripted, TARGET, "champ", ["good"], 0.5).crowned


@pytest.mark.parametrize(
    "means, margin",
    [
        ((0.2, 1.0), 0.0),  # clear: crowned at the first look of S replies
        ((1.2, 1.3), 0.0),  # no better: stops at once
        ((0.9, 1.3), 0.0),  # unclear: looks again, the leader alone
        ((0.85, 2.0), 0.0),  # the extension: past S with what the drop saved
        ((0.2, 1.0), 2.0),  # a margin no lead reaches
    ],
)
def test_the_worker_reaches_the_judges_decision_from_its_scores(means, margin):
    """crowd.rounds.results.decide, given only the final scores of a sequential judging (as a
    job's results.json holds them), reaches the judge's own leader and crowning."""
    from crowd.rounds.bundle import JudgingSettings
    from crowd.rounds.results import decide

    distances = {"champion": noisy(1.0, 0), "a": noisy(means[0], 1), "b": noisy(means[1], 2)}
    scripted = ScriptedEvaluator(distances, samples=24)
    verdict = SequentialJudge().judge(scripted, TARGET, "champion", ["a", "b"], margin)
    judging = JudgingSettings(samples=24, win_margin=margin, judge="sequential")
    assert decide(verdict.scores, ["a", "b"], judging) == (verdict.leader, verdict.crowned)


def test_a_collapsed_candidate_never_leads():
    scripted = ScriptedEvaluator({"champ": noisy(1.0, 0), "one": [0.0] * 100}, samples=24)
    evaluate = scripted.evaluate

    def collapsed(eval_set, adapters, samples=None, progress=None):
        scores = evaluate(eval_set, adapters, samples, progress)
        return [
            Score(s.metric, s.value, s.loss, s.n_items, {**s.detail, "distinct": 0.1})
            if name == "one"
            else s
            for name, s in zip(adapters, scores)
        ]

    scripted.evaluate = collapsed  # type: ignore[method-assign]
    verdict = SequentialJudge().judge(scripted, TARGET, "champ", ["one"], 0.0)
    assert verdict.leader is None and not verdict.crowned


@pytest.fixture
def real_evaluator(tiny_model_dir, fresh_model, tmp_path):
    from crowd.config import TrainingSettings
    from crowd.training.trainer import create_initial_adapter

    torch.set_num_threads(1)
    evaluator = Evaluator(fresh_model, samples=8, max_new_tokens=6, batch_size=8)
    initial = create_initial_adapter(
        str(tiny_model_dir), TrainingSettings(lora_r=4, max_length=64), tmp_path / "init"
    )
    names = [evaluator.load(f"a{i}", adapter(tmp_path / f"a{i}", initial, i)) for i in (1, 2)]
    return evaluator, names


def test_each_look_extends_the_same_prompts_and_seeds(real_evaluator):
    """On the real evaluator: a model's replies at a later look begin with its replies of the
    earlier one (kept, not decoded again), and its scores there are the fixed judge's."""
    evaluator, (champion, candidate) = real_evaluator
    judge = SequentialJudge(futility_t=-1e9, crown_z=50.0)  # never stops early: every look
    verdict = judge.judge(evaluator, TARGET, champion, [candidate], 0.0)
    assert [look["replies"] for look in verdict.looks] == looks(8) == [4, 8]  # nothing saved
    assert evaluator.decoded == 2 * 8 and evaluator.reused == 2 * 4
    fixed = evaluator.evaluate(TARGET, [champion, candidate], samples=8)
    assert fixed[0].detail["distances"] == verdict.scores[champion].detail["distances"]
    assert (
        FixedJudge().judge(evaluator, TARGET, champion, [candidate], 0.0).looks[0]["replies"] == 8
    )
