"""The evaluator on the tiny model: replies kept per adapter files, prompt and seed (a champion
judged again decodes nothing); a name loaded again from other files judges those files; and
the crowning test in standard errors of the paired difference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from crowd.config import TrainingSettings
from crowd.emotions import GOEMOTIONS_LABELS
from crowd.evaluation import EvalSet, Evaluator, Score, repeats_itself, worst_distance
from crowd.serving.protocol import BASE
from crowd.training.trainer import create_initial_adapter

CHAT = [{"role": "user", "content": "Write a reddit comment."}]


class LengthScorer:
    """A real scorer protocol implementation: a text's vector is a soft one-hot of its
    length, so different replies land on different vectors."""

    def score(self, texts):
        vectors = np.full((len(texts), len(GOEMOTIONS_LABELS)), 0.01, np.float32)
        for row, text in enumerate(texts):
            vectors[row, len(text) % len(GOEMOTIONS_LABELS)] = 1.0
        return vectors / vectors.sum(axis=1, keepdims=True)


HELLO = LengthScorer().score(["hello"])[0]  # a target: the vector of a reply of five letters


def adapter(folder: Path, initial: Path, seed: int) -> Path:
    """An adapter with random non-zero B matrices: a model that answers differently."""
    folder.mkdir(parents=True)
    weights = load_file(initial / "adapter_model.safetensors")
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in weights.items():
        if "lora_B" in name:
            weights[name] = torch.randn(tensor.shape, generator=generator) * 0.5
    save_file(weights, folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text((initial / "adapter_config.json").read_text())
    return folder


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    settings = TrainingSettings(lora_r=4, max_length=64)
    initial = create_initial_adapter(str(tiny_model_dir), settings, root / "init")
    return adapter(root / "one", initial, 1), adapter(root / "two", initial, 2)


@pytest.fixture
def evaluator(fresh_model) -> Evaluator:
    torch.set_num_threads(1)
    return Evaluator(fresh_model, samples=6, max_new_tokens=8, batch_size=8)


def test_a_model_judged_again_on_the_same_items_decodes_nothing(evaluator, adapters):
    eval_set = EvalSet("emotion", prompts=[CHAT], target=HELLO, scorer=LengthScorer())
    name = evaluator.load("v2", adapters[0])
    first = evaluator.evaluate(eval_set, [BASE, name])
    assert (evaluator.decoded, evaluator.reused) == (12, 0)
    again = evaluator.evaluate(eval_set, [name], samples=9)  # 6 kept, 3 new
    assert (evaluator.decoded, evaluator.reused) == (15, 6)
    assert again[0].detail["distances"][:6] == first[1].detail["distances"]
    assert len(first[1].detail["distances"]) == first[1].n_items == 6


def test_an_emotion_set_without_its_scorer_is_refused_before_anything_is_decoded(evaluator):
    """The target is a vector in the scorer's space: the two come together in the EvalSet,
    never from whatever scorer a caller last set on the shared evaluator."""
    for half in (
        EvalSet("emotion", prompts=[CHAT], target=HELLO),
        EvalSet("emotion", prompts=[CHAT], scorer=LengthScorer()),
    ):
        with pytest.raises(ValueError, match="target and scorer"):
            evaluator.evaluate(half, [BASE])
    assert evaluator.decoded == 0


def test_a_name_loaded_again_from_other_files_judges_those_files(evaluator, adapters):
    eval_set = EvalSet("emotion", prompts=[CHAT], target=HELLO, scorer=LengthScorer())
    one = evaluator.evaluate(eval_set, [evaluator.load("v2", adapters[0])])[0]
    two = evaluator.evaluate(eval_set, [evaluator.load("v2", adapters[1])])[0]
    assert evaluator.decoded == 12, "the second folder's replies were decoded, not reused"
    assert one.detail["samples"] != two.detail["samples"]
    fresh = evaluator.evaluate(eval_set, [evaluator.load("v3", adapters[1])])[0]
    assert fresh.detail["samples"] == two.detail["samples"]  # v2 now is folder two


def score(distances: list[float]) -> Score:
    values = np.array(distances)
    detail = {"sd": float(values.std(ddof=1)), "distances": distances}
    return Score("emotion_l2", float(values.mean()), None, len(values), detail)


def test_crowning_needs_a_gain_beyond_z_paired_standard_errors():
    champion = score([1.0, 1.2, 0.8, 1.1, 0.9, 1.0])
    steady = score([d - 0.05 for d in champion.detail["distances"]])  # better on every sample
    noisy = score([0.6, 1.5, 0.5, 1.4, 0.7, 1.0])  # better on average, by chance
    assert noisy.value < champion.value
    assert steady.better_than(champion, z=2.0)
    assert not noisy.better_than(champion, z=2.0)
    assert noisy.better_than(champion)  # the old rule (z = 0) crowned it
    assert not champion.better_than(steady, z=2.0)  # worse is never better
    assert not steady.better_than(champion, margin=0.1, z=2.0)  # the margin still applies


def test_a_collapsed_model_never_wins(evaluator):
    """A model that answers everything with the same text is not better, however close that
    text sits to the target; the evaluator records the share of distinct replies."""
    champion = score([1.0, 1.2, 0.8, 1.1, 0.9, 1.0])
    collapsed = score([0.02] * 6)
    collapsed.detail["distinct"] = 1 / 6
    assert collapsed.value < champion.value and not collapsed.better_than(champion, z=2.0)
    varied = score([0.02, 0.03, 0.01, 0.02, 0.04, 0.02])
    varied.detail["distinct"] = 1.0
    assert varied.better_than(champion, z=2.0)
    eval_set = EvalSet("emotion", prompts=[CHAT], target=HELLO, scorer=LengthScorer())
    [found] = evaluator.evaluate(eval_set, [BASE], samples=5)  # detail keeps 5 samples
    assert found.detail["distinct"] == round(len(set(found.detail["samples"])) / 5, 4)


def test_scores_without_samples_compare_as_before():
    accuracy = [Score("pref_accuracy", v, 0.5, 10, {}) for v in (0.7, 0.6)]
    assert accuracy[0].better_than(accuracy[1], z=2.0)
    assert not accuracy[1].better_than(accuracy[0], z=2.0)


class ScriptedServer:
    """The vLLM protocol the evaluator samples from (`VLLMGeneration.replies`), answering each
    adapter with scripted texts in turn: what a model that repeats itself would say."""

    def __init__(self, script: dict[str, list[str]]):
        self.script = script

    def replies(self, chats, adapters, sampling, seeds, max_batch=16, progress=None):
        out = [
            self.script[name][seed % len(self.script[name])] for name, seed in zip(adapters, seeds)
        ]
        if progress is not None:
            progress(len(out), len(out))
        return out


BREAKFAST = "I'm so glad you're enjoying my breakfast! " * 5


@pytest.mark.parametrize(
    "text, repeats",
    [
        (BREAKFAST, True),
        ("ha " * 12, True),
        ("I am happy, I am happy, I am happy, I am happy and so glad", True),
        ("Good Job", False),  # short: the check across replies catches one phrase for all
        ("I love it. I love it. Thanks!", False),
        ("It was a lovely day at the beach, and we swam until the sun set over the hills.", False),
    ],
)
def test_a_reply_that_repeats_itself_is_degenerate(text, repeats):
    assert repeats_itself(text) is repeats


def test_a_sample_that_repeats_itself_counts_as_collapsed(evaluator):
    """Each degenerate sample scores the worst distance, however close its text sits to the
    target, and is not counted as distinct: half of them, and the model has collapsed."""
    target = LengthScorer().score([BREAKFAST])[0]  # the repeated sentence *is* on target
    fine = [f"A varied reply number {i}, each one different from the others." for i in range(4)]
    evaluator.remote = ScriptedServer(
        {"half": [BREAKFAST, *fine[:3]], "most": [BREAKFAST, BREAKFAST, BREAKFAST, fine[0]]}
    )
    seen = []
    half, most = evaluator.evaluate(
        EvalSet("emotion", prompts=[CHAT], target=target, scorer=LengthScorer()),
        ["half", "most"],
        samples=4,
        progress=lambda judged, models: seen.append((judged, models)),
    )
    worst = worst_distance(target)
    assert half.detail["distances"][0] == pytest.approx(worst) and half.detail["repetitive"] == 1
    assert half.detail["distinct"] == 0.75 and not half.collapsed
    assert most.detail["repetitive"] == 3 and most.collapsed
    assert seen[-1] == (2, 2)  # progress ends with both models judged
