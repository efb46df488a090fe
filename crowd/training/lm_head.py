"""A lean stand-in for the fused LM head that TRL patches into every model it trains: the
CPU's head for TRLTrainer, and one of bench/train.py's variants (with `reply_only=False`)."""

from __future__ import annotations

from typing import Any

from crowd.training.base import reply_log_probs, reply_positions
from crowd.training.data import IGNORE


def plain_lm_head(model: Any, reply_only: bool = True) -> None:
    """Give `model` a lean stand-in for TRL's fused LM head (`forward(..., fused_lm_head=True)`).

    TRL 1.16 always patches the model with a chunked LM head that also computes per-token entropy,
    top-1 accuracy and mean logits over the whole vocabulary, for metrics only; without Triton (on
    the CPU) it runs as a loop of torch ops that recomputes each logits tile in the backward pass.
    This stand-in projects onto the vocabulary only the positions whose next token is a reply
    token (`reply_positions`; with `reply_only=False`, every position, as the model's own loss
    does: the baseline bench/train.py measures against), takes their log-probabilities with one
    cross-entropy, and returns zeros for the metric-only fields (nobody reads them). Same loss,
    same gradients. On CUDA, TRL's Triton kernel is kept: it is fast there and never
    builds the (batch, seq, vocab) logits.
    """
    import types

    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    original = type(model).forward

    def forward(self, *args, fused_lm_head=False, labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head:
            extra = {} if labels is None else {"labels": labels}
            return original(self, *args, **extra, **kwargs)
        kwargs["use_cache"] = False
        positions = reply_positions(labels).to(labels.device) if reply_only else None
        if positions is not None:
            kwargs["logits_to_keep"] = positions
        logits = original(self, *args, **kwargs).logits
        log_probs = reply_log_probs(logits, labels, positions)  # (batch, seq - 1), 0 off the reply
        mask = labels[:, 1:].to(log_probs.device) != IGNORE
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        zeros = torch.zeros_like(log_probs, requires_grad=False)
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / count,
            log_probs=log_probs,
            entropy=zeros,
            mean_logits=zeros,
            is_top1=zeros.bool(),
            label_mask=mask,
        )

    model.forward = types.MethodType(forward, model)
