from pathlib import Path

import pytest

from crowd.config import PACKAGED_MODEL
from crowd.models import ModelError, convert_packaged_model, load_base, resolve_base_model
from crowd.serving.protocol import BASE, Sampling


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(ModelError, match="no such folder"):
        resolve_base_model(str(tmp_path / "missing"), tmp_path)


def test_a_folder_without_config_is_named(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_base_model(str(tmp_path), tmp_path)


def test_the_tiny_model_loads_in_eval_mode_without_gradients(tiny_model_dir, tmp_path):
    loaded = load_base(str(tiny_model_dir), tmp_path, device="cpu")
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.tokenizer.padding_side == "left"


@pytest.mark.slow
def test_the_default_model_is_converted_once_and_generates(
    default_model_dir, default_model, new_generation
):
    weights = default_model_dir / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert convert_packaged_model(default_model_dir.parent) == default_model_dir
    assert weights.stat().st_mtime_ns == stamp, "the second start converted again"
    config = (default_model_dir / "config.json").read_text()
    assert "quantization_config" not in config, "fp32 weights must not be marked quantized"
    service = new_generation(default_model, temperature=0.8)  # ModelSettings' sampling
    try:
        reply = service.reply(
            [{"role": "user", "content": "What is the capital of France?"}],
            BASE,
            Sampling(max_new_tokens=16, temperature=0.0),
        )
    finally:
        service.close()
    assert "Paris" in reply


def test_the_packaged_name_resolves_to_the_converted_folder(default_model_dir):
    assert resolve_base_model(PACKAGED_MODEL, default_model_dir.parent) == str(default_model_dir)


def test_processes_converting_the_default_model_at_once_all_get_it(tmp_path):
    """A poisoning study's lanes on a fresh data dir convert at the same time; with one shared
    temporary folder one lane deleted the other's mid-write (SafetensorError: No such file)."""
    import subprocess
    import sys

    code = "import sys; from pathlib import Path; from crowd.models import convert_packaged_model;"
    code += "print(convert_packaged_model(Path(sys.argv[1])))"
    children = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=600)[0].decode().strip() for child in children]
    assert [child.returncode for child in children] == [0, 0]
    assert len(set(outputs)) == 1
    converted = load_base(outputs[0], tmp_path, device="cpu")
    assert converted.model.config.model_type == "llama"
    assert [p.name for p in tmp_path.iterdir()] == [Path(outputs[0]).name]  # no partial left
