"""From stored corrections to training examples, held-out items and points contributions."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

from sqlite_utils import Database

from crowd.training.data import PairExample, SFTExample
from storage import queries


@dataclass
class GroupData:
    """One group's training material for a round, and who contributed what."""

    sft: list[SFTExample] = field(default_factory=list)
    pairs: list[PairExample] = field(default_factory=list)
    corrections: int = 0
    # (participant_id, target text, pair or None) per accepted example, for points
    contributions: list[tuple[str, str, PairExample | None]] = field(default_factory=list)


def target_and_pair(
    db: Database, correction: dict, task: str, target_emotion: str | None
) -> tuple[str | None, PairExample | None]:
    """What a correction teaches: an SFT target text and/or a (chosen, rejected) pair.

    rewrite -> the rewrite, and (rewrite, original); A/B -> the chosen reply, and the pair
    (tie and both-bad teach nothing); thumbs up -> the reply; an emotion label equal to the
    campaign's target -> the reply. Other corrections are kept for export but not trained on.
    """
    prompt = json.loads(correction["prompt"])
    original = correction["original"]
    kind = correction["kind"]
    if kind == "rewrite":
        return correction["rewrite"], PairExample(prompt, correction["rewrite"], original)
    if kind == "choice" and correction["choice"] in ("a", "b"):
        other = queries.get_message(db, correction["other_message_id"])["content"]
        chosen, rejected = (original, other) if correction["choice"] == "a" else (other, original)
        return chosen, PairExample(prompt, chosen, rejected)
    if kind == "rating" and correction["rating"] == 1:
        return original, None
    if kind == "emotion" and task == "emotion" and correction["emotion"] == target_emotion:
        return original, None
    return None, None


def group_data(
    db: Database, corrections: list[dict], task: str, target_emotion: str | None
) -> dict[int, GroupData]:
    """Training material per group from a round's live, train-split corrections."""
    groups: dict[int, GroupData] = defaultdict(GroupData)
    for correction in corrections:
        if correction["split"] != "train":
            continue
        data = groups[correction["group_index"]]
        data.corrections += 1
        text, pair = target_and_pair(db, correction, task, target_emotion)
        if text is not None:
            chat = json.loads(correction["prompt"]) + [{"role": "assistant", "content": text}]
            data.sft.append(SFTExample(chat))
            data.contributions.append((correction["participant_id"], text, pair))
        if pair is not None:
            data.pairs.append(pair)
    return dict(groups)


def heldout_items(
    db: Database, corrections: list[dict], task: str, target_emotion: str | None
) -> tuple[list[list[dict]], list[PairExample]]:
    """Held-out prompts (for sampling) and pairs (for preference accuracy)."""
    prompts: dict[str, list[dict]] = {}
    pairs: list[PairExample] = []
    for correction in corrections:
        prompts.setdefault(correction["prompt"], json.loads(correction["prompt"]))
        _, pair = target_and_pair(db, correction, task, target_emotion)
        if pair is not None:
            pairs.append(pair)
    return list(prompts.values()), pairs
