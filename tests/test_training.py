"""The trainers on the tiny model: real LoRA training, real tokenizer, real adapter files.

Every protocol test runs against both TRLTrainer (the product) and TorchLoopTrainer (the
benchmark baseline), so the baseline is held to the same behaviour it is compared on.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from crowd.config import TrainingSettings
from crowd.training.base import Progress
from crowd.training.data import (
    PairExample,
    SFTExample,
    TrainingCancelled,
    TrainingFailed,
    encode_pair,
    encode_sft,
    pair_rows,
    sft_rows,
)
from crowd.training.loop import TorchLoopTrainer
from crowd.training.trainer import TRLTrainer, create_initial_adapter

SETTINGS = TrainingSettings(epochs=1, batch_size=4, max_length=64, learning_rate=1e-2, seed=0)
TRAINERS = {"trl": TRLTrainer, "loop": TorchLoopTrainer}

USER = {"role": "user", "content": "q"}
ASSISTANT = {"role": "assistant", "content": "a"}
SFT = [
    SFTExample(
        (
            {"role": "user", "content": f"Write a happy sentence about item {i}."},
            {"role": "assistant", "content": f"Item {i} makes me so glad, what a joy!"},
        )
    )
    for i in range(8)
]
PAIRS = [
    PairExample(
        [{"role": "user", "content": f"How do you feel about day {i}?"}],
        chosen=f"Day {i} was wonderful and bright.",
        rejected=f"Day {i} was dull.",
    )
    for i in range(8)
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model gains nothing from more threads, and loses a lot when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=sorted(TRAINERS))
def trainer(request, tiny_model_dir: Path):
    """One trainer per class for the whole module: the base is loaded once, as in the worker."""
    return TRAINERS[request.param](str(tiny_model_dir), SETTINGS, device="cpu")


@pytest.fixture(scope="module")
def initial_adapter(tiny_model_dir: Path, tmp_path_factory) -> Path:
    return create_initial_adapter(
        str(tiny_model_dir), SETTINGS, tmp_path_factory.mktemp("init") / "adapter"
    )


@pytest.fixture(scope="module")
def champion(initial_adapter: Path, tmp_path_factory) -> Path:
    """An adapter with non-zero B matrices, standing for a trained champion."""
    folder = tmp_path_factory.mktemp("champion") / "adapter"
    folder.mkdir()
    weights = load_file(initial_adapter / "adapter_model.safetensors")
    generator = torch.Generator().manual_seed(1)
    for name, tensor in weights.items():
        if "lora_B" in name:
            weights[name] = torch.randn(tensor.shape, generator=generator) * 0.05
    save_file(weights, folder / "adapter_model.safetensors")
    config = (initial_adapter / "adapter_config.json").read_text()
    (folder / "adapter_config.json").write_text(config)
    return folder


def lora_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def base_weights(trainer) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in trainer.base.state_dict().items()}


def max_change(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], part: str) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a if part in k)


def test_sft_changes_the_lora_weights_and_not_the_base(trainer, initial_adapter, tmp_path):
    before = base_weights(trainer)
    result = trainer.train(
        init_adapter=initial_adapter, sft=SFT, pairs=[], mode="sft", out_dir=tmp_path / "out"
    )
    assert result.adapter_dir == tmp_path / "out"
    assert result.steps == 2 and result.seconds > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial folder left
    start, trained = lora_weights(initial_adapter), lora_weights(result.adapter_dir)
    assert max_change(start, trained, "lora_A") > 1e-4
    assert max_change(start, trained, "lora_B") > 1e-4
    after = base_weights(trainer)
    assert after.keys() == before.keys()  # the LoRA layers were taken out again
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_trained_adapter_loads_beside_others_and_changes_outputs(
    trainer, initial_adapter, tiny_model_dir, tmp_path
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = trainer.train(init_adapter=None, sft=SFT, pairs=[], mode="sft", out_dir=tmp_path / "a")
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    ids = torch.tensor([[1, 42, 7, 300, 9, 2]])
    with torch.no_grad():
        plain = base(ids).logits
        model = PeftModel.from_pretrained(base, str(initial_adapter), adapter_name="champion")
        model.load_adapter(str(result.adapter_dir), adapter_name="g1")
        model.set_adapter("g1")
        tuned = model(ids).logits
    assert not torch.allclose(plain, tuned)


def test_training_continues_from_the_init_adapter(trainer, champion, tmp_path, with_settings):
    # A tiny learning rate moves each weight by about 1e-7 per step: the result must sit next
    # to the champion's weights, not next to a fresh adapter's (whose B is zero).
    trainer.settings = with_settings(SETTINGS, learning_rate=1e-7)
    try:
        result = trainer.train(
            init_adapter=champion, sft=SFT, pairs=[], mode="sft", out_dir=tmp_path / "out"
        )
    finally:
        trainer.settings = SETTINGS
    start, trained = lora_weights(champion), lora_weights(result.adapter_dir)
    assert 0 < max_change(start, trained, "lora_") < 1e-5
    assert min(trained[k].abs().max().item() for k in trained if "lora_B" in k) > 0.01


def test_dpo_changes_the_weights(trainer, champion, tmp_path):
    result = trainer.train(
        init_adapter=champion, sft=[], pairs=PAIRS, mode="dpo", out_dir=tmp_path / "out"
    )
    assert result.steps == 2
    assert max_change(lora_weights(champion), lora_weights(result.adapter_dir), "lora_") > 1e-4


def test_sft_then_dpo_reports_every_step(trainer, initial_adapter, tmp_path):
    seen: list[Progress] = []
    result = trainer.train(
        init_adapter=initial_adapter,
        sft=SFT,
        pairs=PAIRS[:4],
        mode="sft+dpo",
        out_dir=tmp_path / "out",
        progress=lambda p: seen.append(p) or True,
    )
    assert [(p.stage, p.step, p.steps) for p in seen] == [
        ("sft", 1, 2),
        ("sft", 2, 2),
        ("dpo", 1, 1),
    ]
    assert all(p.loss is not None and p.loss > 0 and p.eta_s >= 0 for p in seen)
    assert seen[-1].eta_s == 0
    assert result.steps == 3 and result.final_loss == seen[-1].loss


def test_progress_returning_false_cancels_and_writes_nothing(trainer, initial_adapter, tmp_path):
    out, seen = tmp_path / "out", []
    with pytest.raises(TrainingCancelled):
        trainer.train(
            init_adapter=initial_adapter,
            sft=SFT,
            pairs=[],
            mode="sft",
            out_dir=out,
            progress=lambda p: seen.append(p) or False,
        )
    assert [(p.step, p.steps) for p in seen] == [(1, 2)]  # stopped before the second step
    assert list(tmp_path.iterdir()) == []
    # The trainer is usable again afterwards.
    trainer.train(init_adapter=None, sft=SFT[:4], pairs=[], mode="sft", out_dir=out)
    assert (out / "adapter_model.safetensors").is_file()


def test_a_diverging_loss_fails_with_a_clear_message(
    trainer, initial_adapter, tmp_path, with_settings
):
    trainer.settings = with_settings(SETTINGS, learning_rate=1e30)
    try:
        with pytest.raises(TrainingFailed, match=r"loss became (nan|inf).*diverged"):
            trainer.train(
                init_adapter=initial_adapter, sft=SFT, pairs=[], mode="sft", out_dir=tmp_path / "o"
            )
    finally:
        trainer.settings = SETTINGS
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("mode", "sft", "pairs", "message"),
    [
        ("dpo", SFT, [], "needs preference pairs"),
        ("sft+dpo", SFT, [], "needs preference pairs"),
        ("sft", [], PAIRS, "needs SFT examples"),
        ("sft", [SFTExample(({"role": "user", "content": "hi"},))], [], "last message must be"),
        ("sft", [SFTExample(({"role": "robot", "content": "x"}, ASSISTANT))], [], "role"),
        ("sft", [SFTExample(({"role": "user", "content": " "}, ASSISTANT))], [], "no text"),
        ("dpo", [], [PairExample([USER], "", "no")], "must not be empty"),
        ("dpo", [], [PairExample([ASSISTANT], "yes", "no")], "must end with a user message"),
    ],
)
def test_bad_data_fails_before_training(trainer, tmp_path, mode, sft, pairs, message):
    with pytest.raises(TrainingFailed, match=message):
        trainer.train(init_adapter=None, sft=sft, pairs=pairs, mode=mode, out_dir=tmp_path / "o")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", ["sft", "dpo"])
def test_examples_longer_than_max_length_fail_clearly(trainer, tmp_path, with_settings, mode):
    trainer.settings = with_settings(SETTINGS, max_length=8)  # the chat template alone is longer
    try:
        with pytest.raises(TrainingFailed, match=f"no {mode} example fits in max_length=8"):
            trainer.train(
                init_adapter=None, sft=SFT, pairs=PAIRS, mode=mode, out_dir=tmp_path / "o"
            )
    finally:
        trainer.settings = SETTINGS
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_refused(trainer, tmp_path):
    with pytest.raises(ValueError, match="mode must be one of"):
        trainer.train(init_adapter=None, sft=SFT, pairs=[], mode="ppo", out_dir=tmp_path / "o")
    with pytest.raises(TrainingFailed, match="no adapter_config.json"):
        trainer.train(init_adapter=tmp_path, sft=SFT, pairs=[], mode="sft", out_dir=tmp_path / "o")
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        trainer.train(init_adapter=None, sft=SFT, pairs=[], mode="sft", out_dir=tmp_path / "taken")


def test_initial_adapter_changes_no_output(tiny_model_dir, initial_adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    ids = torch.tensor([[1, 42, 7, 300, 9, 2]])
    with torch.no_grad():
        expected = base(ids).logits
        model = PeftModel.from_pretrained(base, str(initial_adapter), adapter_name="champion")
        model.load_adapter(str(initial_adapter), adapter_name="g0")
        model.set_adapter("g0")
        got = model(ids).logits
    assert torch.equal(expected, got)
    assert all("lora_B" not in k or not t.any() for k, t in lora_weights(initial_adapter).items())


# --- TRL and the plain loop compute the same thing ---


def test_the_loop_tokenizes_exactly_as_trl(tiny_model_dir, tmp_path):
    trl = TRLTrainer(str(tiny_model_dir), SETTINGS, device="cpu")
    model = trl.attach(None)
    try:
        sft_data = trl._trl_trainer("sft", model, SFT, tmp_path).train_dataset
        pair_data = trl._trl_trainer("dpo", model, PAIRS, tmp_path).train_dataset
    finally:
        trl.detach(model)
    ours = encode_sft(trl.tokenizer, sft_rows(SFT), SETTINGS.max_length)
    assert [e.input_ids for e in ours] == sft_data["input_ids"]
    assert [e.labels for e in ours] == sft_data["labels"]
    assert any(label == -100 for label in ours[0].labels)  # the prompt carries no loss
    pairs = encode_pair(trl.tokenizer, pair_rows(PAIRS), SETTINGS.max_length)
    assert [p.prompt_ids for p in pairs] == pair_data["prompt_ids"]
    assert [p.chosen_ids for p in pairs] == pair_data["chosen_ids"]
    assert [p.rejected_ids for p in pairs] == pair_data["rejected_ids"]


@pytest.mark.parametrize("mode", ["sft", "dpo"])
def test_trl_and_the_loop_compute_the_same_losses(tiny_model_dir, champion, tmp_path, mode):
    # One batch holding every example, seen twice: no loss depends on the order of examples,
    # and the second one shows that both optimizers took the same first step.
    settings = TrainingSettings(epochs=2, batch_size=4, max_length=64, learning_rate=1e-2)
    losses = {}
    for name, cls in TRAINERS.items():
        seen: list[Progress] = []
        cls(str(tiny_model_dir), settings, device="cpu").train(
            init_adapter=champion,
            sft=SFT[:4],
            pairs=PAIRS[:4],
            mode=mode,
            out_dir=tmp_path / name,
            progress=lambda p, seen=seen: seen.append(p) or True,
        )
        losses[name] = [p.loss for p in seen]
    assert len(losses["trl"]) == 2
    assert losses["trl"] == pytest.approx(losses["loop"], rel=1e-4)
    assert losses["trl"][1] < losses["trl"][0]


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_min_examples_gives_a_small_set_more_epochs(tiny_model_dir, champion, tmp_path, name):
    # 4 examples, batch 4, 1 epoch: one step; at least 10 examples in all: ceil(10/4) = 3.
    settings = replace(SETTINGS, min_examples=10)
    result = TRAINERS[name](str(tiny_model_dir), settings, device="cpu").train(
        init_adapter=champion, sft=SFT[:4], pairs=[], mode="sft", out_dir=tmp_path / "a"
    )
    assert result.steps == 3


@pytest.mark.slow
def test_trl_trains_the_real_default_model(default_model_dir, tmp_path):
    # The packaged model, converted from GGUF, must be trainable by transformers' Trainer.
    trainer = TRLTrainer(str(default_model_dir), SETTINGS, device="cpu")
    result = trainer.train(
        init_adapter=None, sft=SFT[:4], pairs=[], mode="sft", out_dir=tmp_path / "a"
    )
    assert result.steps == 1 and 0 < result.final_loss < 20
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_training_on_cuda_uses_bf16(tiny_model_dir, champion, tmp_path, name):
    trainer = TRAINERS[name](str(tiny_model_dir), SETTINGS, device="cuda")
    assert trainer.base.dtype == torch.bfloat16
    result = trainer.train(
        init_adapter=champion, sft=SFT, pairs=PAIRS, mode="sft+dpo", out_dir=tmp_path / "a"
    )
    assert result.steps == 4
    assert max_change(lora_weights(champion), lora_weights(result.adapter_dir), "lora_") > 1e-4
