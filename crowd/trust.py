"""What the crowd's reviews make of a correction: the campaign's trust rule and its constants,
in one place. The data it reads is gathered by `crowd.assess`; who counts as one voice is
`crowd.voices`; collusion clusters are found by `crowd.collusion` with the constants below.

**Which reviews count.** A review counts toward trust only when it is *independent* of the
correction's author: another voice (a pseudonym on another network, or another account), not a
fellow member of a venue the organizer declared, and not in the author's collusion cluster (dense
mutual endorsement far above what the rest of the crowd gives the same authors,
`crowd.collusion`); and only when it weighs something. One voice counts once per correction
(its first review), however many pseudonyms it has. Reviews are dealt by the server
(`crowd.review`), so a ring cannot choose what it reviews.

**How much a review weighs.** Each voice's verdicts are weighted by its record on *gold*
items, dealt unmarked about one in GOLD_EVERY (the organizer's reference examples and the
verdicts the organizer confirmed): the weight is the log-odds of its smoothed gold accuracy,
log(a / (1 - a)), the weight that makes a weighted majority vote of independent reviewers the
most accurate (Nitzan and Paroush 1982; the idea behind Dawid and Skene 1979 and MACE, Hovy et
al. 2013), scaled so that a reviewer with no gold answers yet weighs 1. The accuracy is
smoothed towards GOLD_PRIOR (a new reviewer is presumed decent, as GOLD_PRIOR_ANSWERS answers
at that accuracy): endorsing known-bad gold or rejecting known-good gold loses weight; at or
below chance a voice weighs 0; the weight never exceeds MAX_WEIGHT. A voice in a collusion
cluster is a ring the crowd has exposed: its verdicts weigh nothing, inside the cluster or out
(its rejections of honest work were part of the attack). A review that weighs nothing does not
count toward `min_reviews` either.

**Status.** A correction the organizer confirmed has the organizer's verdict. Otherwise, with
fewer than `min_reviews` counting reviews it is *unreviewed* (none) or *pending*; then the
weighted balance decides: more endorsement *trusted*, more rejection *rejected*, equal
*contested*. Training uses trusted corrections and, unless the campaign holds them
(`hold_unreviewed`), those still waiting for reviews, never rejected or contested ones (a split
crowd is no endorsement); the held-out set that judges the groups uses trusted ones only (with
the organizer's reference data); points go to corrections that were used.

**Standing and caps are per voice.** A voice *in bad standing* for a round (at least
MIN_DECIDED of its corrections that round decided, more rejected than trusted) has none of
that round's corrections train, not even trusted ones; the dealing audits each voice's items in
random order, so a ring's spam is what its decided items show. No voice supplies more than the
campaign's `person_cap` of a group's training examples or of the judging set (`capped`), and
the judging set is dealt out one item per voice in turn (`in_turns`), so the cap holds, as
nearly as the voices allow, in every first part of it that a judge's early look takes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from storage.rows import Campaign, Correction

C = TypeVar("C", bound=Correction)
"""A correction row, or a read that adds columns to one (the export's): what a filter returns."""

STATUSES = ("unreviewed", "pending", "trusted", "rejected", "contested")

GOLD_EVERY = 8  # about one dealt item in this many is a gold item
GOLD_PRIOR = 0.8  # a reviewer with no gold answers yet is presumed right this often...
GOLD_PRIOR_ANSWERS = 4.0  # ...as if they had given this many gold answers
MAX_WEIGHT = 2.0  # the most one voice's verdict weighs (a new reviewer weighs 1)

MIN_DECIDED = 3
"""Corrections of one voice in one round that review must have decided (trusted or rejected)
before its standing counts: every volunteer has some bad luck with reviewers."""

# Collusion clusters (crowd.collusion): a community of the mutual-endorsement graph is a
# cluster when it has at least CLUSTER_MIN_VOICES voices, at least CLUSTER_MIN_DENSITY of its
# pairs endorse each other beyond chance, its members endorse each other at least
# CLUSTER_MIN_LIFT times as often as the reviewers outside it endorse the same authors (what
# dealing gives by chance), by at least CLUSTER_MIN_EXCESS endorsements in all, with outside
# reviews weighing at least CLUSTER_MIN_OUTSIDE behind that rate, and it holds less than half
# of the reviewers' weight. An honest subgroup whose outside reviewers are half a ring sits
# near a lift of 2; a ring that the crowd rejects, near 10.
CLUSTER_MIN_VOICES = 2
CLUSTER_MIN_DENSITY = 0.5
CLUSTER_MIN_LIFT = 3.0
CLUSTER_MIN_EXCESS = 3.0
CLUSTER_MIN_OUTSIDE = 3.0


@dataclass(frozen=True)
class Tally:
    """What a correction's counting reviews add up to."""

    endorse: float = 0.0  # summed weights of counting endorsements
    reject: float = 0.0  # summed weights of counting rejections
    reviews: int = 0  # counting reviews (one per independent voice)
    confirmed: str | None = None  # the organizer's verdict ('endorse' or 'reject'), if any


NO_REVIEWS = Tally()


@dataclass(frozen=True)
class TrustRule:
    """The campaign's rule. `on=False` reproduces the loop before peer review: every live
    correction trains and judges, none is rejected."""

    on: bool = True
    min_reviews: int = 2
    hold_unreviewed: bool = False  # with review on, only trusted corrections train

    def status(self, tally: Tally) -> str:
        """One of STATUSES."""
        if tally.confirmed:
            return "trusted" if tally.confirmed == "endorse" else "rejected"
        if tally.reviews == 0:
            return "unreviewed"
        if tally.reviews < self.min_reviews:
            return "pending"
        if math.isclose(tally.endorse, tally.reject, abs_tol=1e-9):
            return "contested"
        return "trusted" if tally.endorse > tally.reject else "rejected"

    def trains(self, tally: Tally) -> bool:
        """May this correction be a training example? Trusted ones and, unless held, those
        still waiting for reviews; never rejected or contested ones."""
        if not self.on:
            return True
        status = self.status(tally)
        if self.hold_unreviewed:
            return status == "trusted"
        return status not in ("rejected", "contested")

    def judges(self, tally: Tally) -> bool:
        """May it be part of the held-out set that judges every group? Trusted ones only."""
        return not self.on or self.status(tally) == "trusted"


def consensus(status: str) -> str | None:
    """The verdict a review should have given to agree with the crowd, once there is one."""
    return {"trusted": "endorse", "rejected": "reject"}.get(status)


def rule_of(campaign: Campaign) -> TrustRule:
    """The trust rule a campaign row sets."""
    return TrustRule(
        on=bool(campaign.get("reviews_on")),
        min_reviews=campaign.get("min_reviews") or 2,
        hold_unreviewed=bool(campaign.get("hold_unreviewed")),
    )


def gold_weight(right: int, wrong: int) -> float:
    """A voice's weight from its gold answers (see the module docstring): 1 with none, 0 at
    or below chance, at most MAX_WEIGHT."""
    accuracy = (right + GOLD_PRIOR * GOLD_PRIOR_ANSWERS) / (right + wrong + GOLD_PRIOR_ANSWERS)
    if accuracy <= 0.5:
        return 0.0
    accuracy = min(accuracy, 1 - 1e-6)
    prior = math.log(GOLD_PRIOR / (1 - GOLD_PRIOR))
    return min(MAX_WEIGHT, math.log(accuracy / (1 - accuracy)) / prior)


def tallies(
    reviews: Iterable[tuple[int, str, str]],
    counts: Callable[[int, str], bool],
    weight: Callable[[str], float],
    confirmed: dict[int, str],
    voice: Callable[[str], str] = str,
) -> dict[int, Tally]:
    """correction id -> Tally, from its reviews (correction id, reviewer, verdict), oldest
    first: `counts(correction, reviewer)` says whether the review may count (independent of
    the author), `weight(reviewer)` what it weighs; a voice counts once per correction (its
    first review). Corrections the organizer `confirmed` carry its verdict."""
    sums: dict[int, list[float]] = {}
    voices_seen: set[tuple[int, str]] = set()
    for cid, reviewer, verdict in reviews:
        key = (cid, voice(reviewer))
        if key in voices_seen or not counts(cid, reviewer):
            continue
        voices_seen.add(key)
        found = sums.setdefault(cid, [0.0, 0.0, 0])
        found[verdict == "reject"] += weight(reviewer)
        found[2] += 1
    result = {cid: Tally(e, r, int(n)) for cid, (e, r, n) in sums.items()}
    for cid, verdict in confirmed.items():
        known = result.get(cid, NO_REVIEWS)
        result[cid] = Tally(known.endorse, known.reject, known.reviews, verdict)
    return result


def capped(owners: list[str], share: float) -> list[bool]:
    """Which of a group's items (by owner, oldest first) count, so that no owner supplies more
    than `share` of what counts, or more than the other owners' median when the group is too
    small for that share to leave anyone a full voice. The excess is the owner's newest items;
    they are kept in the database, just not used. share >= 1 keeps everything. Owners are
    voices wherever the rule applies (`crowd.voices`)."""
    if share >= 1:
        return [True] * len(owners)
    counts: dict[str, int] = {}
    for owner in owners:
        counts[owner] = counts.get(owner, 0) + 1
    allowed = {owner: _allowance(owner, counts, share) for owner in counts}
    seen: dict[str, int] = {}
    keep = []
    for owner in owners:
        seen[owner] = seen.get(owner, 0) + 1
        keep.append(seen[owner] <= allowed[owner])
    return keep


def in_turns(owners: Sequence[str]) -> list[int]:
    """An order of items (given by owner, in their order) that deals them out one per owner in
    turn: every owner's first item, then every owner's second, and so on, each turn in the given
    order. Any first n items of it hold at most ceil(n / owners) of one owner's while every
    owner still has items, so a judge that stops after its first look (the sequential judge's
    S/4 replies) sees no voice above its share there either."""
    seen: dict[str, int] = {}
    turn = []
    for owner in owners:
        turn.append(seen.get(owner, 0))
        seen[owner] = turn[-1] + 1
    return sorted(range(len(owners)), key=turn.__getitem__)


def _allowance(owner: str, counts: dict[str, int], share: float) -> int:
    """The most items `owner` may supply: k with k <= share * (others + k), or the others'
    median count if that is more; everything when nobody else contributed."""
    others = sorted(n for o, n in counts.items() if o != owner)
    if not others:
        return counts[owner]
    by_share = int(share * sum(others) / (1 - share))
    mid = len(others) // 2
    median = others[mid] if len(others) % 2 else (others[mid - 1] + others[mid]) // 2
    return max(1, by_share, median)


def _who(correction: Correction) -> str:
    return correction["participant_id"]


def bad_standing(
    corrections: Sequence[Correction],
    verdicts: dict[int, Tally],
    rule: TrustRule,
    voice: Callable[[str], str] = str,
) -> set[str]:
    """The voices among `corrections` (one round's) with at least MIN_DECIDED of them decided
    by review and more rejected than trusted. Nobody while reviews are off."""
    decided: dict[str, list[int]] = {}
    for c in corrections:
        status = rule.status(verdicts.get(c["id"], NO_REVIEWS))
        if rule.on and status in ("trusted", "rejected"):
            decided.setdefault(voice(_who(c)), [0, 0])[status == "rejected"] += 1
    return {v for v, (good, bad) in decided.items() if good + bad >= MIN_DECIDED and bad > good}


def training_corrections(
    corrections: list[C],
    verdicts: dict[int, Tally],
    rule: TrustRule,
    share: float,
    voice: Callable[[str], str] = str,
) -> list[C]:
    """The train-split corrections a round trains on and pays points for: those the rule lets
    train, by voices in good standing, within each group's per-voice cap. `corrections` are
    one round's, oldest first in, oldest first out; `voice` maps a pseudonym to its voice."""
    barred = bad_standing(corrections, verdicts, rule, voice)
    allowed = [
        c
        for c in corrections
        if c["split"] == "train"
        and voice(_who(c)) not in barred
        and rule.trains(verdicts.get(c["id"], NO_REVIEWS))
    ]
    by_group: dict[int, list[C]] = {}
    for correction in allowed:
        by_group.setdefault(correction["group_index"], []).append(correction)
    used = {
        c["id"]
        for items in by_group.values()
        for c, keep in zip(items, capped([voice(_who(c)) for c in items], share))
        if keep
    }
    return [c for c in allowed if c["id"] in used]


def judging_corrections(
    heldout: list[C],
    verdicts: dict[int, Tally],
    rule: TrustRule,
    share: float,
    voice: Callable[[str], str] = str,
) -> list[C]:
    """The held-out corrections that judge every group: trusted ones (all, with reviews off),
    no voice supplying more than `share` of them."""
    allowed = [c for c in heldout if rule.judges(verdicts.get(c["id"], NO_REVIEWS))]
    keep = capped([voice(_who(c)) for c in allowed], share)
    return [c for c, k in zip(allowed, keep) if k]
