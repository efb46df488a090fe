"""The merged candidate's adapter merging (crowd.training.merge) on the tiny model: PEFT's own
`add_weighted_adapter`, weights that make every combination type a mean, refusals of
adapters of different shapes, and a base model left as it was."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from crowd.config import TrainingSettings
from crowd.training.base import LoraHost, save_adapter
from crowd.training.merge import MergeRefused

SETTINGS = TrainingSettings(epochs=1, batch_size=2, max_length=64, seed=0)
METHODS = ("ties_svd", "dare_ties_svd", "svd", "ties", "dare_ties", "linear")


def random_adapter(host: LoraHost, out_dir: Path, seed: int) -> Path:
    """A LoRA adapter with random (non-zero) A and B, saved as training saves one."""
    model = host.attach(None)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    try:
        return save_adapter(model, out_dir)
    finally:
        host.detach(model)


def deltas(adapter_dir: Path) -> dict[str, torch.Tensor]:
    """Each adapted layer's weight change scaling * B @ A, from the saved files."""
    import json

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    scaling = config["lora_alpha"] / config["r"]
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    return {
        key.replace(".lora_A.weight", ""): scaling
        * weights[key.replace("lora_A", "lora_B")]
        @ weights[key]
        for key in weights
        if key.endswith("lora_A.weight")
    }


@pytest.fixture(scope="module")
def host(tiny_model_dir):
    torch.set_num_threads(1)
    return LoraHost(str(tiny_model_dir), SETTINGS, device="cpu")


@pytest.mark.parametrize("method", METHODS)
def test_a_merge_of_copies_of_one_adapter_is_that_adapter(host, tmp_path, method):
    """The weights make every combination type a mean (nothing pruned at density 1)."""
    one = random_adapter(host, tmp_path / "one", seed=1)
    copies = []
    for i in range(3):
        copies.append(tmp_path / f"copy{i}")
        copies[-1].mkdir()
        for f in one.iterdir():
            (copies[-1] / f.name).write_bytes(f.read_bytes())
    merged = host.merge(copies, tmp_path / "merged", method, ["a", "b", "c"], density=1.0)
    want, got = deltas(one), deltas(merged)
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-3, atol=1e-5)


def test_a_merge_lies_between_its_sources_and_leaves_the_base_alone(host, tmp_path):
    base_before = {k: v.clone() for k, v in host.base.state_dict().items()}
    a = random_adapter(host, tmp_path / "a", seed=1)
    b = random_adapter(host, tmp_path / "b", seed=2)
    merged = host.merge([a, b], tmp_path / "merged", "svd", ["group A", "group B"])
    got, da, db = deltas(merged), deltas(a), deltas(b)
    for key in got:  # the mean of the two deltas, at the sources' rank (16): its truncated SVD
        u, s, vh = torch.linalg.svd((da[key] + db[key]) / 2)
        best = u[:, :16] @ torch.diag(s[:16]) @ vh[:16]
        torch.testing.assert_close(got[key], best, rtol=1e-3, atol=1e-5)
    assert not any(n.startswith(".") for n in (p.name for p in tmp_path.iterdir()))
    after = host.base.state_dict()
    assert base_before.keys() == after.keys()
    assert all(torch.equal(base_before[k], after[k]) for k in after)
    assert not hasattr(host.base, "peft_config")  # unwrapped again


def test_adapters_of_different_ranks_or_targets_are_refused_by_name(host, tmp_path):
    a = random_adapter(host, tmp_path / "a", seed=1)
    small = LoraHost.__new__(LoraHost)
    small.__dict__.update(host.__dict__, settings=replace(SETTINGS, lora_r=4))
    b = random_adapter(small, tmp_path / "b", seed=2)
    with pytest.raises(MergeRefused, match=r"different LoRA ranks \(group A r=16, group B r=4\)"):
        host.merge([a, b], tmp_path / "m1", "ties_svd", ["group A", "group B"])
    fewer = LoraHost.__new__(LoraHost)
    fewer.__dict__.update(host.__dict__, settings=replace(SETTINGS, target_modules=("q_proj",)))
    c = random_adapter(fewer, tmp_path / "c", seed=3)
    with pytest.raises(MergeRefused, match="adapt different modules"):
        host.merge([a, c], tmp_path / "m2", "ties_svd", ["group A", "group C"])
    with pytest.raises(MergeRefused, match="at least two"):
        host.merge([a], tmp_path / "m3", "ties_svd", ["group A"])
    assert not any((tmp_path / m).exists() for m in ("m1", "m2", "m3"))


def test_a_round_jobs_merge_of_unlike_adapters_fails_that_candidate_with_why(host, tmp_path):
    """The job's 'merged' kind (crowd.rounds.job.CANDIDATE_KINDS) over two trained group
    adapters of different ranks: that candidate fails with the refusal in the organizer's words
    (naming the groups), which the crowning turns into the round's note; nothing is written."""
    from crowd.rounds.bundle import Bundle, Candidate, JudgingSettings
    from crowd.rounds.crown import not_built
    from crowd.rounds.job import Kit, make_candidate
    from crowd.rounds.progress import Reporter
    from crowd.rounds.results import CANDIDATES, Results

    out = tmp_path / "out"
    done = out / CANDIDATES
    small = LoraHost.__new__(LoraHost)
    small.__dict__.update(host.__dict__, settings=replace(SETTINGS, lora_r=4))
    random_adapter(host, done / "g0", seed=1)
    random_adapter(small, done / "g1", seed=2)
    for name in ("g0", "g1"):
        (done / f"{name}.json").write_text('{"status": "trained", "steps": 1, "loss": 0.5}')
    merged = Candidate("merged", "merged", None, inputs=("g0", "g1"), method="ties_svd")
    groups = [Candidate("g0", "group", 0, (0,)), Candidate("g1", "group", 1, (1,))]
    bundle = Bundle(
        *({"id": 1}, {"id": 1, "number": 1}, "tiny", "preference", None, "sft", 0),
        SETTINGS,
        JudgingSettings(),
        1,
        {0: [], 1: []},
        [*groups, merged],
        {},
    )
    kit = Kit(host, None, "tiny")  # type: ignore[arg-type]  # merging needs no judge
    outcome = make_candidate(kit, bundle, merged, out, Reporter(out))
    assert outcome["status"] == "failed"
    assert "different LoRA ranks (group Amber r=16, group Blue r=4)" in outcome["error"]
    assert not (done / "merged").exists() and (done / "merged.json").is_file()
    results = Results("", {}, {"merged": outcome["error"]}, {}, None, False, {}, [], out)
    assert not_built(bundle, results) == [f"The merged candidate was not built: {outcome['error']}"]
