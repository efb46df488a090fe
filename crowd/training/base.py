"""What both trainers share: progress and result records, the private base model wrapped in a
LoRA adapter per call, per-step loss checks and progress reports, and the atomic adapter save.

A trainer loads its OWN copy of the base model (never the serving one), once, and reuses it for
every `train()` call: each call wraps it in a PEFT LoRA (the init adapter's weights and shape, or
a fresh adapter from the settings), trains, writes the adapter folder atomically and unwraps it
again (`unload`), so the base weights never change.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crowd.config import TrainingSettings
from crowd.training.data import IGNORE, TrainingCancelled, TrainingFailed

DPO_BETA = 0.1  # strength of the pull towards the reference (TRL's default); both trainers use it
MAX_GRAD_NORM = 1.0  # gradient clipping, TRL's default; both trainers use it
TRAINED = "default"  # PEFT name of the adapter being trained
REFERENCE = "ref"  # PEFT name TRL's DPOTrainer looks for: the frozen starting point of DPO


@dataclass
class Progress:
    """Reported after every optimizer step; eta_s is the seconds left in this stage."""

    stage: str  # 'sft' | 'dpo'
    step: int  # optimizer steps done in this stage, 1-based
    steps: int  # optimizer steps this stage will take
    loss: float | None
    eta_s: float | None


@dataclass
class TrainResult:
    adapter_dir: Path  # a PEFT adapter folder (adapter_config.json + adapter_model.safetensors)
    steps: int  # optimizer steps over all stages
    final_loss: float  # loss of the last step of the last stage
    seconds: float  # wall time of the whole train() call


ProgressFn = Callable[[Progress], bool]


def lora_config(settings: TrainingSettings) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )


def check_adapter_dir(path: Path) -> None:
    """Refuse a folder that is not a saved PEFT adapter before it touches the base model."""
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if not (path / name).is_file():
            raise TrainingFailed(f"the init adapter {path} has no {name}")


def save_adapter(model: Any, out_dir: Path) -> Path:
    """Write the trained adapter to `out_dir` atomically: a hidden sibling folder, then a rename."""
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial), selected_adapters=[TRAINED], save_embedding_layers=False)
    partial.rename(out_dir)
    return out_dir


def add_reference(model: Any) -> None:
    """Copy the trained adapter's current weights into a frozen REFERENCE adapter (DPO's ref),
    as TRL's DPOTrainer does itself when handed a PeftModel."""
    import copy

    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    if REFERENCE in model.peft_config:
        model.delete_adapter(REFERENCE)
    model.add_adapter(REFERENCE, copy.deepcopy(model.peft_config[TRAINED]))
    weights = get_peft_model_state_dict(model, adapter_name=TRAINED)
    set_peft_model_state_dict(model, weights, adapter_name=REFERENCE)
    model.set_adapter(TRAINED)  # also freezes every adapter but TRAINED


def _gguf_leftover(config: Any) -> bool:
    quantization = getattr(config, "quantization_config", None)
    if quantization is None:
        return False
    method = quantization.get("quant_method") if isinstance(quantization, dict) else None
    return str(method or getattr(quantization, "quant_method", "")).lower().endswith("gguf")


class LoraHost:
    """Owns one private copy of the base model and wraps it in a LoRA adapter per train() call."""

    def __init__(self, base_path: str, settings: TrainingSettings, device: str = "auto"):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        from crowd.models import load_tokenizer, pick_device

        self.settings = settings
        self.device = pick_device(device)
        self.dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer = load_tokenizer(base_path)
        config = AutoConfig.from_pretrained(base_path)
        if _gguf_leftover(config):
            # The packaged model converted from GGUF keeps its GGUF quantization_config although
            # its weights are plain tensors; transformers' Trainer refuses "quantized" models.
            del config.quantization_config
        self.base = AutoModelForCausalLM.from_pretrained(base_path, config=config, dtype=self.dtype)
        self.base.to(self.device).requires_grad_(False)  # type: ignore[arg-type]  # as in crowd.models.load_base
        self.scale = 1  # the running train() call's: see epochs_for

    def epochs_for(self, n_rows: int) -> int:
        """Epochs over `n_rows` for the running train() call: the settings' rule, with
        `min_examples` counted `scale` times (a union of that many groups' candidates)."""
        return self.settings.epochs_for(n_rows, self.scale)

    def attach(self, init_adapter: Path | None) -> Any:
        """The base wrapped in a trainable TRAINED adapter: init_adapter's weights, or fresh."""
        import torch
        from peft import PeftModel, get_peft_model

        torch.manual_seed(self.settings.seed)  # fresh LoRA A matrices and dropout masks
        if init_adapter is None:
            return get_peft_model(self.base, lora_config(self.settings), adapter_name=TRAINED)
        check_adapter_dir(init_adapter)
        try:  # the adapter keeps its own LoRA shape (r, alpha, targets), whatever the settings
            return PeftModel.from_pretrained(
                self.base, str(init_adapter), adapter_name=TRAINED, is_trainable=True
            )
        except (ValueError, KeyError, RuntimeError) as exc:
            raise TrainingFailed(f"cannot load the init adapter {init_adapter}: {exc}") from exc

    def detach(self, model: Any) -> None:
        """Remove the LoRA layers, and any forward TRL patched onto the base, restoring the base."""
        model.unload()
        self.base.__dict__.pop("forward", None)
        self.base.eval()

    def merge(
        self,
        sources: Sequence[Path],
        out_dir: Path,
        method: str,
        names: Sequence[str],
        density: float | None = None,
    ) -> Path:
        """Merge the adapters in `sources` into `out_dir` on this host's base copy
        (crowd.training.merge; `density` defaults to its DENSITY); MergeRefused when they
        cannot be merged."""
        from crowd.training.merge import DENSITY, merge_adapters

        try:
            return merge_adapters(
                self.base,
                sources,
                out_dir,
                method,
                names,
                density=DENSITY if density is None else density,
                seed=self.settings.seed,
            )
        finally:
            self.base.eval()

    def run(
        self,
        init_adapter: Path | None,
        out_dir: Path,
        stages: Sequence[Callable[[Any], tuple[int, float]]],
        scale: int = 1,
    ) -> TrainResult:
        """Attach, run the stages in turn (each returns its steps and last loss), save;
        `scale`: see epochs_for."""
        if out_dir.exists():
            raise FileExistsError(f"the output folder {out_dir} already exists")
        started = time.monotonic()
        model = self.attach(init_adapter)
        self.scale = max(1, scale)
        try:
            steps, loss = 0, math.nan
            for stage in stages:
                stage_steps, loss = stage(model)
                steps += stage_steps
            save_adapter(model, out_dir)
        finally:
            self.scale = 1
            self.detach(model)
        return TrainResult(out_dir, steps, loss, time.monotonic() - started)


def require_examples(count: int, stage: str, max_length: int) -> None:
    """Both trainers drop examples whose prompt alone fills max_length (as TRL does)."""
    if count == 0:
        raise TrainingFailed(
            f"no {stage} example fits in max_length={max_length} tokens: each prompt alone is "
            "that long, leaving no reply token to learn from"
        )


class StepWatch:
    """Checks every step's loss and reports progress: NaN/inf -> failure, False -> cancel."""

    def __init__(self, stage: str, progress: ProgressFn | None):
        self.stage, self.progress = stage, progress
        self.steps, self.started, self.loss = 0, time.monotonic(), math.nan

    def start(self, steps: int) -> None:
        self.steps, self.started = steps, time.monotonic()

    def after_step(self, step: int, loss: float) -> None:
        """Raise TrainingFailed or TrainingCancelled, else return (training goes on)."""
        self.loss = loss
        if not math.isfinite(loss):
            raise TrainingFailed(
                f"the {self.stage} loss became {loss} at step {step} of {self.steps}: "
                "training diverged (lower the learning rate)"
            )
        if self.progress is None:
            return
        eta = (time.monotonic() - self.started) / step * (self.steps - step)
        if self.progress(Progress(self.stage, step, self.steps, loss, eta)) is False:
            raise TrainingCancelled(f"cancelled during {self.stage} at step {step} of {self.steps}")


def reply_log_probs(logits: Any, labels: Any, positions: Any = None) -> Any:
    """Log-probability of each next-token label, shape (batch, seq - 1), zero where the label
    is IGNORE. One cross-entropy over the logits, with the labels shifted rather than the logits
    sliced (as transformers' own loss does), so the logits are never copied. `positions`: the
    logits are only those of these positions (`reply_positions`), not of every one."""
    import torch.nn.functional as F

    shifted = F.pad(labels, (0, 1), value=IGNORE)[:, 1:].to(logits.device)
    picked = shifted if positions is None else shifted[:, positions]
    per_token = F.cross_entropy(
        logits.float().flatten(0, 1), picked.flatten(), ignore_index=IGNORE, reduction="none"
    ).view(picked.shape)
    if positions is not None:
        per_token = per_token.new_zeros(shifted.shape).index_copy(1, positions, per_token)
    return -per_token[:, :-1]


def reply_positions(labels: Any) -> Any:
    """The positions whose next token is a reply token in some row of the batch: the only
    logits a loss on the replies reads (1-D, for the model's `logits_to_keep`). The prompt's
    positions, most of a short example, need none of the vocabulary-wide projection."""
    import torch.nn.functional as F

    shifted = F.pad(labels, (0, 1), value=IGNORE)[:, 1:]
    return (shifted != IGNORE).any(0).nonzero().squeeze(1)
