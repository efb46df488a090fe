"""Judging a round: every candidate and the champion on the same held-out set.

Emotion task: sample replies to held-out prompts, map them to emotion vectors with the scorer,
metric = mean L2 distance to the target vector (lower is better).
Preference task: share of held-out pairs where the model gives the chosen reply the higher
length-normalised log-likelihood (higher is better); mean held-out loss breaks ties.

All models are decoded in the same batches (peft mixed-adapter batches over one base copy), by
the continuous batching that serves replies (crowd/serving/batching.py). Replies are kept per
(adapter files, prompt, seed, sampling): a round's champion, judged again on the same prompts and
seeds in the next round, is not decoded again.

A candidate beats the champion only by more than `z` standard errors of the paired difference
of their distances, and only when it has not collapsed: the metrics, the Score and the collapse
rules live in crowd.metrics.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from crowd.metrics import Score, repeats_itself, worst_distance
from crowd.models import LoadedModel
from crowd.serving.batching import decode_all, encode_chats
from crowd.serving.protocol import BASE, Generation, Sampling
from crowd.training.data import PairExample

REPLY_CACHE_MAX = 100_000  # replies kept for re-judging (short strings: a few MB at most)


Progress = Callable[[float, int], None]  # (models judged so far, models)


@dataclass(frozen=True)
class EvalSet:
    """What every model is judged on in one round."""

    task: str  # 'emotion' | 'preference'
    prompts: list[list[dict]] = field(default_factory=list)  # emotion: chats to answer
    pairs: list[PairExample] = field(default_factory=list)  # preference: held-out pairs
    target: np.ndarray | None = None  # emotion: the target vector
    scorer: Any = None  # emotion: maps replies into the target's space (it made the target)
    seed: int = 0  # emotion: reply j samples on seed * 1_000_003 + j, under every model

    def emotion_target(self) -> np.ndarray:
        """The target vector; raises ValueError unless it comes with its scorer."""
        if self.target is None or self.scorer is None:
            raise ValueError("an emotion evaluation needs its target and scorer (EvalSet)")
        return self.target

    def distances(self, texts: Sequence[str]) -> np.ndarray:
        """Each text's Euclidean distance to the emotion target, through the scorer."""
        target = self.emotion_target()
        vectors = self.scorer.score([t or " " for t in texts])
        return np.linalg.norm(vectors - target[None, :], axis=1)


class Evaluator:
    """Scores model versions on an EvalSet using its own copy of the base model."""

    def __init__(
        self,
        loaded: LoadedModel,
        samples: int = 24,
        max_new_tokens: int = 48,
        batch_size: int = 16,
        remote: Generation | None = None,
    ):
        self.loaded = loaded
        self.remote = remote  # when set, emotion samples come from this vLLM server
        self.samples = samples
        self.sampling = Sampling(max_new_tokens=max_new_tokens, temperature=0.8, top_p=0.95)
        self.batch_size = batch_size
        self._files: dict[str, str] = {BASE: BASE}  # adapter name -> the files it holds
        self._replies: dict[tuple, str] = {}  # (files, prompt, seed, sampling) -> reply
        self.decoded = self.reused = 0  # replies decoded, and taken from the ones kept

    def load(self, name: str, adapter_dir: Path | None) -> str:
        """Make adapter `name` available for evaluation; None is the bare base. A name loaded
        before from other files (another database's `v2`) is loaded again from these."""
        from peft import PeftModel

        if adapter_dir is None:
            return BASE
        files = _identity(adapter_dir)
        if self.remote is not None:
            self.remote.adapters.ensure(name, adapter_dir)
        model = self.loaded.model
        if not isinstance(model, PeftModel):
            self.loaded.model = PeftModel.from_pretrained(
                model, str(adapter_dir), adapter_name=name
            )
            self.loaded.model.eval()
        elif self._files.get(name) != files:
            if name in model.peft_config:
                model.delete_adapter(name)
            model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
        self._files[name] = files
        return name

    def forget_replies(self) -> None:
        """Drop the replies kept for re-judging: the next evaluation decodes every reply, as a
        judge meeting these models for the first time would (bench/round.py's repeats)."""
        self._replies.clear()

    def evaluate(
        self,
        eval_set: EvalSet,
        adapters: Sequence[str],
        samples: int | None = None,
        progress: Progress | None = None,
    ) -> list[Score]:
        """One Score per adapter name, all on the same items; emotion: `samples` replies per
        model (default: the evaluator's). `progress(models judged, models)` as it goes (the
        first may be fractional: models decode together)."""
        report = progress or (lambda judged, models: None)
        if eval_set.task == "emotion":
            return self._emotion(eval_set, adapters, samples or self.samples, report)
        return self._preference(eval_set.pairs, adapters, report)

    def _emotion(
        self, eval_set: EvalSet, adapters: Sequence[str], samples: int, progress: Progress
    ) -> list[Score]:
        target = eval_set.emotion_target()  # checked before anything is decoded
        prompts = [eval_set.prompts[i % len(eval_set.prompts)] for i in range(samples)]
        rows = [(name, chat) for name in adapters for chat in prompts]
        # Prompt j gets the same sampling noise under every model, whatever the batch it decodes
        # in (each row samples from its own seeded generator); a round judges with seeds of its
        # own (JudgingSettings.for_round, in the EvalSet).
        seeds = [eval_set.seed * 1_000_003 + j for _ in adapters for j in range(len(prompts))]
        replies = self._sample(rows, seeds, progress)
        distances = eval_set.distances(replies)
        degenerate = np.array([repeats_itself(r) for r in replies], dtype=bool)
        distances[degenerate] = worst_distance(target)
        scores = []
        for i, _ in enumerate(adapters):
            part = slice(i * len(prompts), (i + 1) * len(prompts))
            mine = distances[part]
            sd = float(mine.std(ddof=1)) if len(mine) > 1 else 0.0  # replies differ a lot
            fine = {r for r, bad in zip(replies[part], degenerate[part]) if not bad}
            detail = {
                "samples": replies[part][:5],
                "distinct": round(len(fine) / max(1, len(prompts)), 4),
                "repetitive": int(degenerate[part].sum()),
                "sd": round(sd, 6),
                "distances": [round(float(d), 6) for d in mine],
            }
            scores.append(Score("emotion_l2", float(mine.mean()), None, len(prompts), detail))
        return scores

    def _sample(
        self, rows: list[tuple[str, list[dict]]], seeds: list[int], progress: Progress
    ) -> list[str]:
        """Replies for (adapter, chat) rows with their seeds; only those not decoded before
        under the same adapter files, prompt, seed and sampling are decoded now. `progress` in
        models, the rows being model after model."""
        s = self.sampling
        keys = [
            (self._files.get(name, name), json.dumps(chat, sort_keys=True), seed, s)
            for (name, chat), seed in zip(rows, seeds)
        ]
        todo = [i for i, key in enumerate(keys) if key not in self._replies]
        self.decoded, self.reused = self.decoded + len(todo), self.reused + len(keys) - len(todo)
        models = len({name for name, _ in rows}) or 1
        per_model, kept = len(rows) / models, len(keys) - len(todo)
        progress(kept / per_model, models)
        if todo:
            sample = (
                self.remote.replies if self.remote is not None else partial(decode_all, self.loaded)
            )
            fresh = sample(
                [rows[i][1] for i in todo],
                [rows[i][0] for i in todo],
                s,
                [seeds[i] for i in todo],
                max_batch=self.batch_size,
                progress=lambda done, _: progress((kept + done) / per_model, models),
            )
            if len(self._replies) + len(todo) > REPLY_CACHE_MAX:
                self.forget_replies()
            self._replies.update({keys[i]: reply for i, reply in zip(todo, fresh)})
        return [self._replies[key] for key in keys]

    def _preference(
        self, pairs: Sequence[PairExample], adapters: Sequence[str], progress: Progress
    ) -> list[Score]:
        scores = []
        for i, name in enumerate(adapters):
            progress(i, len(adapters))
            chosen = self.mean_log_likelihood([(p.prompt, p.chosen) for p in pairs], name)
            rejected = self.mean_log_likelihood([(p.prompt, p.rejected) for p in pairs], name)
            wins = [float(c > r) for c, r in zip(chosen, rejected)]
            scores.append(
                Score(
                    "pref_accuracy",
                    float(np.mean(wins)) if wins else 0.0,
                    float(-np.mean(chosen)) if chosen else None,
                    len(pairs),
                    {"margins": [round(c - r, 4) for c, r in zip(chosen, rejected)][:50]},
                )
            )
        progress(len(adapters), len(adapters))
        return scores

    def mean_log_likelihood(
        self, items: Sequence[tuple[list[dict], str]], adapter: str
    ) -> list[float]:
        """Per item: the reply's mean log-probability per token given its prompt (nats/token)."""
        import torch

        out: list[float] = []
        tokenizer = self.loaded.tokenizer
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            prompt = encode_chats(tokenizer, [p for p, _ in chunk], self.loaded.device)
            replies = tokenizer(
                [r + tokenizer.eos_token for _, r in chunk],
                add_special_tokens=False,
                return_tensors="pt",
                padding=True,
                padding_side="right",
            )
            ids = torch.cat([prompt["input_ids"], replies["input_ids"].to(self.loaded.device)], 1)
            mask = torch.cat(
                [prompt["attention_mask"], replies["attention_mask"].to(self.loaded.device)], 1
            )
            kwargs = (
                {"adapter_names": [adapter] * len(chunk)}
                if hasattr(self.loaded.model, "peft_config")
                else {}
            )
            with torch.inference_mode():
                logits = self.loaded.model(input_ids=ids, attention_mask=mask, **kwargs).logits
            n_prompt = prompt["input_ids"].shape[1]
            logp = torch.log_softmax(logits[:, n_prompt - 1 : -1].float(), -1)
            target = ids[:, n_prompt:]
            token_logp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            reply_mask = mask[:, n_prompt:].float()
            per_item = (token_logp * reply_mask).sum(1) / reply_mask.sum(1).clamp(min=1)
            out += per_item.tolist()
        return out


def _identity(adapter_dir: Path) -> str:
    """The sha256 of the adapter's weights: a folder trained again (after a crash) is another
    model, and the same weights in another folder (last round's winner, copied into this round's
    bundle as its champion) are the same model, whose replies need not be decoded again."""
    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if not weights.exists():
        return f"{Path(adapter_dir).resolve()}@missing"
    digest = hashlib.sha256()
    with open(weights, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_heldout(
    ids_by_group: dict[int, list[int]], share: float, rng: random.Random
) -> list[int]:
    """A fixed share of every group's corrections, drawn per group: the held-out ids."""
    heldout: list[int] = []
    for group in sorted(ids_by_group):
        ids = sorted(ids_by_group[group])
        k = int(round(share * len(ids)))
        if len(ids) >= 2:
            k = min(max(k, 1 if share > 0 else 0), len(ids) - 1)  # keep one to train on
        heldout += rng.sample(ids, k) if k else []
    return sorted(heldout)
