"""Training examples, their checks, and their tokenization into TRL's shapes.

Both trainers see the same examples through the same chat template: `TRLTrainer` hands TRL the
conversational rows built here (`sft_rows`, `pair_rows`) and lets TRL tokenize them, while
`TorchLoopTrainer` tokenizes them with `encode_sft` / `encode_pair`, which reproduce TRL 1.16's
prompt-completion tokenization (prompt with the generation prompt, the common prefix of the
prompt and the full conversation, keep-start truncation). A test holds the two to each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from storage.vocabulary import CHAT_ROLES, TRAINING_MODES

IGNORE = -100  # label of a token that carries no loss


class TrainingFailed(Exception):
    """Training could not produce an adapter (bad data, a NaN loss...); the message says why."""


class TrainingCancelled(Exception):
    """The progress callback asked to stop; nothing was written to the output folder."""


@dataclass(frozen=True)
class SFTExample:
    """A conversation whose last message is the assistant reply to learn (the loss target)."""

    messages: tuple[dict[str, str], ...] | list


@dataclass(frozen=True)
class PairExample:
    """A preference pair: chat messages up to (not including) the reply, and two replies."""

    prompt: list[dict[str, str]]
    chosen: str
    rejected: str


def check_inputs(mode: str, sft: Sequence[SFTExample], pairs: Sequence[PairExample]) -> None:
    """Raise ValueError for an unknown mode, TrainingFailed for missing or malformed data."""
    if mode not in TRAINING_MODES:
        raise ValueError(f"mode must be one of {', '.join(TRAINING_MODES)}, not {mode!r}")
    if "sft" in mode and not sft:
        raise TrainingFailed(f"mode {mode!r} needs SFT examples, and none were given")
    if "dpo" in mode and not pairs:
        raise TrainingFailed(f"mode {mode!r} needs preference pairs, and none were given")
    for index, example in enumerate(sft if "sft" in mode else ()):
        _check_messages(list(example.messages), f"SFT example {index}")
        if example.messages[-1]["role"] != "assistant":
            raise TrainingFailed(f"SFT example {index}: the last message must be the assistant's")
    for index, pair in enumerate(pairs if "dpo" in mode else ()):
        _check_messages(list(pair.prompt), f"pair {index}")
        if pair.prompt[-1]["role"] != "user":
            raise TrainingFailed(f"pair {index}: the prompt must end with a user message")
        if not pair.chosen.strip() or not pair.rejected.strip():
            raise TrainingFailed(f"pair {index}: the chosen and rejected replies must not be empty")


def _check_messages(messages: list[Any], where: str) -> None:
    if not messages:
        raise TrainingFailed(f"{where}: no messages")
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES:
            raise TrainingFailed(
                f"{where}: each message needs a role among {', '.join(CHAT_ROLES)}"
            )
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            raise TrainingFailed(f"{where}: a {message['role']} message has no text")


# --- rows for TRL (conversational prompt-completion and preference formats) ---


def sft_rows(examples: Sequence[SFTExample]) -> list[dict[str, list[dict[str, str]]]]:
    """TRL prompt-completion rows: the loss falls on the completion (the last message) only."""
    rows = []
    for example in examples:
        messages = [_plain(m) for m in example.messages]
        rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return rows


def pair_rows(pairs: Sequence[PairExample]) -> list[dict[str, list[dict[str, str]]]]:
    """TRL conversational preference rows."""
    return [
        {
            "prompt": [_plain(m) for m in pair.prompt],
            "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}],
        }
        for pair in pairs
    ]


def _plain(message: dict[str, str]) -> dict[str, str]:
    return {"role": message["role"], "content": message["content"]}


# --- our own tokenization, identical to TRL's, for the plain loop ---


@dataclass(frozen=True)
class EncodedSFT:
    input_ids: list[int]
    labels: list[int]  # IGNORE on the prompt, the token id on the completion


@dataclass(frozen=True)
class EncodedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


def _template(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=generation_prompt
    )
    return list(out["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def encode_sft(tokenizer: Any, rows: list[dict], max_length: int) -> list[EncodedSFT]:
    """Tokenize prompt-completion rows; keep the first `max_length` tokens; drop rows left
    without a completion token (as TRL does)."""
    encoded = []
    for row in rows:
        prompt_ids = _template(tokenizer, row["prompt"], generation_prompt=True)
        full_ids = _template(tokenizer, row["prompt"] + row["completion"], generation_prompt=False)
        prompt_len = _common_prefix(prompt_ids, full_ids)
        labels = [IGNORE] * prompt_len + full_ids[prompt_len:]
        item = EncodedSFT(full_ids[:max_length], labels[:max_length])
        if any(label != IGNORE for label in item.labels):
            encoded.append(item)
    return encoded


def encode_pair(tokenizer: Any, rows: list[dict], max_length: int) -> list[EncodedPair]:
    """Tokenize preference rows; drop rows whose prompt alone fills `max_length` (as TRL does)."""
    encoded = []
    for row in rows:
        prompt_ids = _template(tokenizer, row["prompt"], generation_prompt=True)
        chosen = _template(tokenizer, row["prompt"] + row["chosen"], generation_prompt=False)
        rejected = _template(tokenizer, row["prompt"] + row["rejected"], generation_prompt=False)
        n = min(_common_prefix(prompt_ids, chosen), _common_prefix(prompt_ids, rejected))
        if n < max_length:
            encoded.append(EncodedPair(prompt_ids[:n], chosen[n:], rejected[n:]))
    return encoded


def collate_sft(batch: Sequence[EncodedSFT], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors: input_ids, attention_mask, labels (IGNORE on padding)."""
    import torch

    width = max(len(item.input_ids) for item in batch)
    ids = [item.input_ids + [pad_id] * (width - len(item.input_ids)) for item in batch]
    mask = [[1] * len(item.input_ids) + [0] * (width - len(item.input_ids)) for item in batch]
    labels = [item.labels + [IGNORE] * (width - len(item.labels)) for item in batch]
    return {
        "input_ids": torch.tensor(ids),
        "attention_mask": torch.tensor(mask),
        "labels": torch.tensor(labels),
    }


def collate_pairs(batch: Sequence[EncodedPair], pad_id: int, max_length: int) -> dict[str, Any]:
    """Chosen sequences then rejected ones, right-padded: input_ids, attention_mask, labels
    (IGNORE outside the reply), as TRL's DataCollatorForPreference lays them out."""
    sequences = [p.prompt_ids + p.chosen_ids for p in batch]
    sequences += [p.prompt_ids + p.rejected_ids for p in batch]
    replies = [p.chosen_ids for p in batch] + [p.rejected_ids for p in batch]
    items = []
    for seq, reply in zip(sequences, replies, strict=True):
        labels = [IGNORE] * (len(seq) - len(reply)) + reply
        items.append(EncodedSFT(seq[:max_length], labels[:max_length]))
    return collate_sft(items, pad_id)
