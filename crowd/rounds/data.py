"""From a round's stored corrections to each group's training examples, the held-out items and
the points contributions. What each correction teaches is `crowd.lessons`' one definition."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from crowd.lessons import lesson
from crowd.training.data import PairExample, SFTExample


@dataclass
class GroupData:
    """One group's training material for a round, and who contributed what."""

    sft: list[SFTExample] = field(default_factory=list)
    pairs: list[PairExample] = field(default_factory=list)
    corrections: int = 0
    # (participant_id, target text, pair or None) per accepted example, for points
    contributions: list[tuple[str, str, PairExample | None]] = field(default_factory=list)


def group_data(
    corrections: list[dict], task: str, target_emotion: str | None
) -> dict[int, GroupData]:
    """Training material per group from a round's live, train-split corrections (rows from
    `storage.rounds.round_corrections`, which carry reply B as `other_reply`)."""
    groups: dict[int, GroupData] = defaultdict(GroupData)
    for correction in corrections:
        if correction["split"] != "train":
            continue
        data = groups[correction["group_index"]]
        data.corrections += 1
        taught = lesson(correction, task, target_emotion)
        pair = PairExample(taught.prompt, *taught.pair) if taught.pair else None
        if taught.sft_target is not None:
            data.sft.append(SFTExample(taught.sft_messages()))
            data.contributions.append((correction["participant_id"], taught.sft_target, pair))
        if pair is not None:
            data.pairs.append(pair)
    return dict(groups)


def heldout_items(
    corrections: list[dict], task: str, target_emotion: str | None
) -> tuple[list[list[dict]], list[PairExample]]:
    """Held-out prompts (for sampling) and pairs (for preference accuracy)."""
    prompts: dict[str, list[dict]] = {}
    pairs: list[PairExample] = []
    for correction in corrections:
        taught = lesson(correction, task, target_emotion)
        prompts.setdefault(correction["prompt"], taught.prompt)
        if taught.pair is not None:
            pairs.append(PairExample(taught.prompt, *taught.pair))
    return list(prompts.values()), pairs
