"""Fine-tune one LoRA candidate: the Trainer protocol and the product's TRL implementation.

`TRLTrainer` runs TRL's SFTTrainer / DPOTrainer on a PEFT LoRA over its own private copy of the
base model (crowd.training_base). `TorchLoopTrainer` (crowd.training_loop) is a plain PyTorch loop
with the same protocol, tokenization and loss: the baseline TRL's speed is measured against
(bench/train.py). `create_initial_adapter` writes a campaign's first champion.

What TRLTrainer turns off in TRL 1.16, with the per-step cost measured on SmolLM2-135M on the CPU
(`_trl_args`, `_replace_lm_head`, `_run_trainer`):
- gradient checkpointing, on by default in TRL: it recomputes every activation (+33 %);
- TRL's chunked LM head, which TRL always patches in and which also computes the per-token
  entropy / top-1 accuracy / mean-logit metrics; TRL 1.16 has no switch for those metrics. On the
  CPU it has no Triton kernel and runs as torch ops that recompute the logits in the backward
  pass (+15 %, half of a step on the tiny test model); replaced there by a plain cross-entropy
  over the logits of the reply's positions only (the prompt's need no vocabulary projection);
- the full gc.collect() that Trainer.train() starts with (accelerate's free_memory);
- bf16 on the CPU (TRL's default): every result here is measured in fp32, and a CPU without
  bf16 instructions runs it slower (one with them, avx512_bf16, ran a step at 0.69x);
- checkpoint saving, evaluation, reporting integrations, the tqdm and printer callbacks, and
  the NaN filter that would hide a NaN loss from us.
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from crowd.config import TrainingSettings
from crowd.training.base import (
    DPO_BETA,
    MAX_GRAD_NORM,
    LoraHost,
    Progress,
    ProgressFn,
    StepWatch,
    TrainResult,
    require_examples,
    save_adapter,
)
from crowd.training.data import (
    PairExample,
    SFTExample,
    TrainingCancelled,
    TrainingFailed,
    check_inputs,
    pair_rows,
    sft_rows,
)
from crowd.training.lm_head import plain_lm_head
from crowd.training.loop import TorchLoopTrainer

__all__ = [
    "SFTExample",
    "PairExample",
    "Progress",
    "TrainResult",
    "TrainingCancelled",
    "TrainingFailed",
    "Trainer",
    "TRLTrainer",
    "TorchLoopTrainer",
    "create_initial_adapter",
]


class Trainer(Protocol):
    def train(
        self,
        *,
        init_adapter: Path | None,
        sft: Sequence[SFTExample],
        pairs: Sequence[PairExample],
        mode: str,
        out_dir: Path,
        progress: ProgressFn | None = None,
        scale: int = 1,
    ) -> TrainResult:
        """Train from `init_adapter` (None: a fresh adapter) in `mode` ('sft', 'dpo' or
        'sft+dpo': SFT then DPO against the SFT result) and write the adapter to `out_dir`.
        `progress` is called after every optimizer step; returning False cancels: raises
        TrainingCancelled and writes nothing. `scale`: the candidate stands for that many
        groups' candidates (the union), and its `min_examples` counts that many times, so it
        trains at least as many example-passes as they do together. Raises TrainingFailed on
        bad data or on a NaN or inf loss, FileExistsError when `out_dir` exists."""
        ...

    def merge(
        self, sources: Sequence[Path], out_dir: Path, method: str, names: Sequence[str]
    ) -> Path:
        """Merge the saved adapters `sources` (named `names` in messages) by PEFT's combination
        `method` into `out_dir` (crowd.training.merge). Raises MergeRefused when they differ in
        rank or targets, FileExistsError when `out_dir` exists."""
        ...


class TRLTrainer(LoraHost):
    """The product's trainer: TRL's SFTTrainer and DPOTrainer on a PEFT LoRA."""

    def train(
        self,
        *,
        init_adapter: Path | None,
        sft: Sequence[SFTExample],
        pairs: Sequence[PairExample],
        mode: str,
        out_dir: Path,
        progress: ProgressFn | None = None,
        scale: int = 1,
    ) -> TrainResult:
        check_inputs(mode, sft, pairs)
        stages = []
        if "sft" in mode:
            stages.append(lambda model: self._stage("sft", model, sft, progress))
        if "dpo" in mode:
            stages.append(lambda model: self._stage("dpo", model, pairs, progress))
        return self.run(init_adapter, out_dir, stages, scale)

    def _stage(
        self, stage: str, model: Any, data: Sequence, progress: ProgressFn | None
    ) -> tuple[int, float]:
        watch = StepWatch(stage, progress)
        with tempfile.TemporaryDirectory(prefix="crowd-trl-") as work:
            trainer = self._trl_trainer(stage, model, data, Path(work))
            require_examples(len(trainer.train_dataset), stage, self.settings.max_length)
            trainer.add_callback(_trl_report(watch))
            self._run_trainer(trainer)
            return trainer.state.global_step, watch.loss

    def _run_trainer(self, trainer: Any) -> None:
        # Trainer.train() starts with a full gc.collect() (accelerate's free_memory), which
        # walks every Python object of the process; frozen objects are skipped.
        gc.freeze()
        try:
            trainer.train()
        finally:
            gc.unfreeze()

    def _replace_lm_head(self, model: Any) -> None:
        if not _use_triton(self.device):
            plain_lm_head(model.get_base_model())  # replaces the head TRL's __init__ patched in

    def _trl_trainer(self, stage: str, model: Any, data: Sequence, work: Path) -> Any:
        from datasets import Dataset
        from transformers import PrinterCallback, ProgressCallback
        from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

        trainer: SFTTrainer | DPOTrainer
        if stage == "sft":
            # prompt-completion rows: the loss falls on the last (assistant) message only
            rows = sft_rows(data)
            trainer = SFTTrainer(
                model=model,
                args=SFTConfig(
                    **self._trl_args(work, len(rows)), completion_only_loss=True, packing=False
                ),
                train_dataset=Dataset.from_list(rows),
                processing_class=self.tokenizer,
            )
        else:
            rows = pair_rows(data)
            trainer = DPOTrainer(
                model=model,
                args=DPOConfig(
                    **self._trl_args(work, len(rows)), beta=DPO_BETA, loss_type=["sigmoid"]
                ),
                train_dataset=Dataset.from_list(rows),
                processing_class=self.tokenizer,
            )
        trainer.remove_callback(PrinterCallback)  # prints every log line
        trainer.remove_callback(ProgressCallback)
        self._replace_lm_head(model)
        return trainer

    def _trl_args(self, work: Path, n_rows: int) -> dict[str, Any]:
        """Arguments shared by SFTConfig and DPOConfig: our settings, and TRL's extras off."""
        s = self.settings
        return dict(
            output_dir=str(work),  # a temporary folder; nothing is saved there
            per_device_train_batch_size=s.batch_size,
            num_train_epochs=self.epochs_for(n_rows),
            learning_rate=s.learning_rate,
            seed=s.seed,
            max_length=s.max_length,
            lr_scheduler_type="linear",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=MAX_GRAD_NORM,
            optim="adamw_torch",
            bf16=self.device == "cuda",  # TRL's default; on the CPU fp32 (see above)
            fp16=False,
            use_cpu=self.device == "cpu",
            activation_checkpointing=False,  # TRL turns it on; it recomputes every activation
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            logging_strategy="steps",
            logging_steps=1,  # our progress callback reads each step's loss from the log
            logging_nan_inf_filter=False,  # the filter would replace a NaN loss by an average
            disable_tqdm=True,
            dataloader_pin_memory=False,
            dataset_num_proc=None,
        )


def _use_triton(device: str) -> bool:
    import torch
    from trl.kernels.chunked_logprob import _use_triton as trl_uses_triton

    return trl_uses_triton(torch.device(device))


def _trl_report(watch: StepWatch) -> Any:
    """A TrainerCallback that feeds each step's logged loss to `watch`. What `watch` raises
    propagates out of `Trainer.train()`, which stops training between two steps."""
    from transformers import TrainerCallback

    class Report(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            watch.start(state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                watch.after_step(state.global_step, logs["loss"])

    return Report()


def create_initial_adapter(base_path: str, settings: TrainingSettings, out_dir: Path) -> Path:
    """A fresh LoRA adapter for the base at `base_path`, written atomically to `out_dir`.

    PEFT initialises B = 0, so the adapter changes no output: the first champion of a campaign.
    """
    if out_dir.exists():
        raise FileExistsError(f"the output folder {out_dir} already exists")
    host = LoraHost(base_path, settings, device="cpu")
    model = host.attach(None)
    try:
        return save_adapter(model, out_dir)
    finally:
        host.detach(model)
