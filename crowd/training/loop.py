"""TorchLoopTrainer: the Trainer protocol as a plain PyTorch loop, the baseline for TRL's speed.

Same examples, tokenization, loss and optimisation as TRLTrainer: TRL's prompt-completion
tokenization (crowd.training_data), token-mean cross-entropy on the reply tokens for SFT, the
sigmoid DPO loss against a frozen copy of the starting adapter, AdamW with a linear decay to zero,
gradient clipping at MAX_GRAD_NORM, shuffling with the settings' seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from crowd.training.base import (
    DPO_BETA,
    MAX_GRAD_NORM,
    REFERENCE,
    TRAINED,
    LoraHost,
    ProgressFn,
    StepWatch,
    TrainResult,
    add_reference,
    reply_log_probs,
    require_examples,
)
from crowd.training.data import (
    EncodedPair,
    EncodedSFT,
    PairExample,
    SFTExample,
    check_inputs,
    collate_pairs,
    collate_sft,
    encode_pair,
    encode_sft,
    pair_rows,
    sft_rows,
)


class TorchLoopTrainer(LoraHost):
    """A plain PyTorch LoRA loop with the same protocol and loss as TRLTrainer."""

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
        max_length = self.settings.max_length
        stages = []
        if "sft" in mode:
            items = encode_sft(self.tokenizer, sft_rows(sft), max_length)
            require_examples(len(items), "sft", max_length)
            stages.append(lambda model: self._stage("sft", model, items, self._sft_loss, progress))
        if "dpo" in mode:
            duos = encode_pair(self.tokenizer, pair_rows(pairs), max_length)
            require_examples(len(duos), "dpo", max_length)
            stages.append(lambda model: self._stage("dpo", model, duos, self._dpo_loss, progress))
        return self.run(init_adapter, out_dir, stages, scale)

    def _stage(
        self,
        stage: str,
        model: Any,
        items: Sequence[Any],
        batch_loss: Callable[[Any, list[Any]], Any],
        progress: ProgressFn | None,
    ) -> tuple[int, float]:
        """One stage: epochs over shuffled batches, one optimizer step per batch."""
        import torch

        s = self.settings
        if stage == "dpo":
            add_reference(model)  # before collecting the trainable parameters: it freezes it
            _disable_dropout(model)  # as TRL's DPOTrainer does (disable_dropout=True)
        params = [p for p in model.parameters() if p.requires_grad]
        epochs = self.epochs_for(len(items))
        steps = math.ceil(len(items) / s.batch_size) * epochs
        optimizer = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=0.0)
        # linear decay to zero, as transformers' "linear" schedule without warm-up
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - i / steps)
        order_rng = torch.Generator().manual_seed(s.seed)
        watch = StepWatch(stage, progress)
        watch.start(steps)
        model.train()
        step = 0
        for _ in range(epochs):
            order = torch.randperm(len(items), generator=order_rng).tolist()
            for start in range(0, len(order), s.batch_size):
                batch = [items[i] for i in order[start : start + s.batch_size]]
                with self._autocast():
                    loss = batch_loss(model, batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                watch.after_step(step, loss.item())
        model.eval()
        return steps, watch.loss

    def _autocast(self) -> Any:
        import torch

        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device == "cuda")

    def _sft_loss(self, model: Any, items: list[EncodedSFT]) -> Any:
        """Mean cross-entropy over the reply tokens of the batch (the model's own loss)."""
        batch = _to(collate_sft(items, self.tokenizer.pad_token_id), self.device)
        return model(**batch, use_cache=False).loss

    def _dpo_loss(self, model: Any, items: list[EncodedPair]) -> Any:
        """Sigmoid DPO loss against the frozen REFERENCE adapter."""
        import torch
        import torch.nn.functional as F

        pad_id, max_length = self.tokenizer.pad_token_id, self.settings.max_length
        batch = _to(collate_pairs(items, pad_id, max_length), self.device)  # chosen, then rejected
        policy = _reply_logps(model, batch)
        with torch.no_grad():
            model.set_adapter(REFERENCE)
            reference = _reply_logps(model, batch)
            model.set_adapter(TRAINED)
        chosen, rejected = (policy - reference).chunk(2)
        return -F.logsigmoid(DPO_BETA * (chosen - rejected)).mean()


def _reply_logps(model: Any, batch: dict[str, Any]) -> Any:
    """Sum of the log-probabilities of each sequence's reply tokens, shape (batch,)."""
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).logits
    return reply_log_probs(logits, batch["labels"]).sum(-1)


def _to(batch: dict[str, Any], device: str) -> dict[str, Any]:
    return {key: value.to(device) for key, value in batch.items()}


def _disable_dropout(model: Any) -> None:
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
