"""The all-zero adapter that the vLLM engine serves the bare base through (crowd/vllm_engine.py
says why): a real PEFT adapter for the model, which changes no logit. Runs in `make test`; the
vLLM server's side of it is in tests/test_vllm.py."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel

from crowd.models import ModelError
from crowd.serving.vllm_engine import write_zero_adapter, zero_adapter_folder


def test_the_zero_adapter_loads_and_changes_nothing(loaded, tiny_model_dir, tmp_path):
    folder = write_zero_adapter(str(tiny_model_dir), tmp_path / "zero")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == 1 and config["target_modules"] == ["q_proj"]
    assert [p.name for p in tmp_path.iterdir()] == ["zero"]  # no partial folder left behind
    ids = loaded.tokenizer("Say hello to the sea.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base = loaded.model(ids).logits
        wrapped = PeftModel.from_pretrained(loaded.model, str(folder), adapter_name="zero")
        try:
            assert torch.equal(wrapped(ids).logits, base)
        finally:
            wrapped.unload()  # the module-scoped model goes back as it was
    again = write_zero_adapter(str(tiny_model_dir), tmp_path / "zero")  # a second writer
    assert again == folder and [p.name for p in tmp_path.iterdir()] == ["zero"]


def test_a_server_model_this_machine_cannot_read_is_named(tmp_path):
    with pytest.raises(ModelError, match="cannot read the vLLM server's model"):
        zero_adapter_folder(str(tmp_path / "not-a-model"))
