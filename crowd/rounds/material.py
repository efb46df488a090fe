"""From a round's stored corrections to each group's training examples, the held-out items and
the points contributions. What each correction teaches is `crowd.lessons`' one definition; which
corrections count (independent review, standing and the cap per voice) is `crowd.trust`'s,
applied to the campaign's data by `crowd.assess`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlite_utils import Database

from crowd.assess import assess
from crowd.lessons import lesson
from crowd.training.data import PairExample, SFTExample
from crowd.trust import in_turns
from storage import rounds as store
from storage.rows import Campaign, Correction, Round


@dataclass
class GroupData:
    """One group's training material for a round, and who contributed what."""

    sft: list[SFTExample] = field(default_factory=list)
    pairs: list[PairExample] = field(default_factory=list)
    corrections: int = 0
    # (participant_id, target text, pair or None) per accepted example, for points
    contributions: list[tuple[str, str, PairExample | None]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)  # every admitted correction, oldest first
    sft_ids: list[int] = field(default_factory=list)  # the correction behind each SFT example
    pair_ids: list[int] = field(default_factory=list)  # the correction behind each pair


def group_data(
    corrections: list[Correction], task: str, target_emotion: str | None
) -> dict[int, GroupData]:
    """Training material per group from a round's live, train-split corrections (rows from
    `storage.rounds.round_corrections`, which carry reply B as `other_reply`)."""
    groups: dict[int, GroupData] = defaultdict(GroupData)
    for correction in corrections:
        if correction["split"] != "train":
            continue
        data = groups[correction["group_index"]]
        data.corrections += 1
        data.ids.append(correction["id"])
        taught = lesson(correction, task, target_emotion)
        pair = PairExample(taught.prompt, *taught.pair) if taught.pair else None
        messages = taught.sft_messages()
        if taught.sft_target is not None and messages is not None:
            data.sft.append(SFTExample(messages))
            data.sft_ids.append(correction["id"])
            data.contributions.append((correction["participant_id"], taught.sft_target, pair))
        if pair is not None:
            data.pairs.append(pair)
            data.pair_ids.append(correction["id"])
    return dict(groups)


def heldout_items(
    corrections: list[Correction], task: str, target_emotion: str | None
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


def training_material(
    db: Database, campaign: Campaign, round_: Round
) -> tuple[dict[int, GroupData], dict]:
    """Each group's training material for `round_` under the campaign's trust rule and cap,
    and per person (used, not used) counts of their train-split corrections, for the ledger."""
    live = store.round_corrections(db, round_["id"])
    used = assess(db, campaign).training(live)
    data = group_data(used, campaign["task"], campaign["target_emotion"])
    usage: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    used_ids = {c["id"] for c in used}
    for correction in live:
        if correction["split"] == "train":
            usage[correction["participant_id"]][correction["id"] not in used_ids] += 1
    return data, dict(usage)


def judging_material(db: Database, campaign: Campaign, round_: Round) -> list[Correction]:
    """The held-out corrections that judge `round_`'s candidates: the campaign's held-out
    history up to it, trusted ones only when reviews are on, capped per voice (the cap keeps a
    voice's oldest). Ordered newest round first: the judge's looks take the first prompts, so
    each round is judged first on its own held-out prompts, which no champion was crowned on,
    and a champion's lucky replies to the prompts that crowned it are not what every later round
    measures first (`docs/results/candidates.md`, "Love at 0 %"). Within a round the items are
    dealt one per voice in turn (`crowd.trust.in_turns`, oldest first within a voice), so a
    voice that sent its held-out items first does not own the judge's first look."""
    heldout = store.heldout_corrections(db, campaign["id"], round_["number"])
    assessment = assess(db, campaign)
    kept = assessment.judging(heldout)
    number = {r["id"]: r["number"] for r in store.rounds_of(db, campaign["id"])}
    by_round: dict[int, list[Correction]] = defaultdict(list)
    for correction in kept:
        by_round[number[correction["round_id"]]].append(correction)
    ordered: list[Correction] = []
    for n in sorted(by_round, reverse=True):
        items = by_round[n]
        voices = [assessment.voice(c["participant_id"]) for c in items]
        ordered += [items[i] for i in in_turns(voices)]
    return ordered
