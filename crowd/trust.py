"""What the crowd's reviews make of a correction: the campaign's trust rule, in one place.

A correction's reviews are endorsements and rejections by people other than its author. Once it
has at least `min_reviews`, their balance decides: more endorsements than rejections makes it
*trusted*, more rejections *rejected*, a tie *contested*. Before that it is *unreviewed* (no
review yet) or *pending*. Training uses trusted corrections and those still waiting for
reviews, never rejected or contested ones (a crowd split evenly is no endorsement: in the
poisoning study most hostile examples that trained were contested, docs/results/poisoning.md);
the held-out set that judges the groups uses trusted ones only (with the organizer's reference
data); points go to corrections that were used. A person *in bad standing* for a round (at
least MIN_DECIDED of their corrections that round decided by review, more rejected than
trusted) has none of that round's corrections train, not even the trusted ones: a hostile
volunteer's few endorsed corrections (a ring partner's endorsement, a lucky random one) were
most of what hostile volunteers still taught in the poisoning study. A review *agrees* when its
verdict matches the final consensus (trusted: endorse; rejected: reject); contested and
pending ones have none yet.
"""

from __future__ import annotations

from dataclasses import dataclass

VERDICTS = ("endorse", "reject")
STATUSES = ("unreviewed", "pending", "trusted", "rejected", "contested")


@dataclass(frozen=True)
class TrustRule:
    """The campaign's rule. `on=False` reproduces the loop before peer review: every live
    correction trains and judges, none is rejected."""

    on: bool = True
    min_reviews: int = 2

    def status(self, endorsements: int, rejections: int) -> str:
        """One of STATUSES for a correction with these review counts."""
        if endorsements + rejections == 0:
            return "unreviewed"
        if endorsements + rejections < self.min_reviews:
            return "pending"
        if endorsements == rejections:
            return "contested"
        return "trusted" if endorsements > rejections else "rejected"

    def trains(self, endorsements: int, rejections: int) -> bool:
        """May this correction be a training example? Trusted ones and those still waiting for
        reviews; not rejected or contested ones."""
        return not self.on or self.status(endorsements, rejections) not in ("rejected", "contested")

    def judges(self, endorsements: int, rejections: int) -> bool:
        """May it be part of the held-out set that judges every group? Trusted ones only."""
        return not self.on or self.status(endorsements, rejections) == "trusted"


def consensus(status: str) -> str | None:
    """The verdict a review should have given to agree with the crowd, once there is one."""
    return {"trusted": "endorse", "rejected": "reject"}.get(status)


def rule_of(campaign: dict) -> TrustRule:
    """The trust rule a campaign row sets."""
    return TrustRule(
        on=bool(campaign.get("reviews_on")), min_reviews=campaign.get("min_reviews") or 2
    )


def capped(owners: list[str], share: float) -> list[bool]:
    """Which of a group's items (by owner, oldest first) count, so that no owner supplies more
    than `share` of what counts, or more than the other owners' median when the group is too
    small for that share to leave anyone a full voice. The excess is the owner's newest items;
    they are kept in the database, just not used. share >= 1 keeps everything."""
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


NO_REVIEWS = (0, 0)


MIN_DECIDED = 3
"""Corrections of one person in one round that review must have decided (trusted or rejected)
before their standing counts: every volunteer has some bad luck with reviewers."""


def bad_standing(
    corrections: list[dict], counts: dict[int, tuple[int, int]], rule: TrustRule
) -> set[str]:
    """The people among `corrections` (one round's) with at least MIN_DECIDED of them decided
    by review and more rejected than trusted. Nobody while reviews are off."""
    decided: dict[str, list[int]] = {}
    for c in corrections:
        status = rule.status(*counts.get(c["id"], NO_REVIEWS))
        if rule.on and status in ("trusted", "rejected"):
            decided.setdefault(c["participant_id"], [0, 0])[status == "rejected"] += 1
    return {p for p, (good, bad) in decided.items() if good + bad >= MIN_DECIDED and bad > good}


def training_corrections(
    corrections: list[dict], counts: dict[int, tuple[int, int]], rule: TrustRule, share: float
) -> list[dict]:
    """The train-split corrections a round trains on and pays points for: those the rule lets
    train (not rejected by review) by people in good standing, within each group's per-person
    cap. `corrections` are one round's; `counts` maps a correction id to its (endorsements,
    rejections); oldest first in, oldest first out."""
    barred = bad_standing(corrections, counts, rule)
    allowed = [
        c
        for c in corrections
        if c["split"] == "train"
        and c["participant_id"] not in barred
        and rule.trains(*counts.get(c["id"], NO_REVIEWS))
    ]
    by_group: dict[int, list[dict]] = {}
    for correction in allowed:
        by_group.setdefault(correction["group_index"], []).append(correction)
    used = {
        c["id"]
        for items in by_group.values()
        for c, keep in zip(items, capped([c["participant_id"] for c in items], share))
        if keep
    }
    return [c for c in allowed if c["id"] in used]


def judging_corrections(
    heldout: list[dict], counts: dict[int, tuple[int, int]], rule: TrustRule, share: float
) -> list[dict]:
    """The held-out corrections that judge every group: trusted ones (all, with reviews off),
    no person supplying more than `share` of them."""
    allowed = [c for c in heldout if rule.judges(*counts.get(c["id"], NO_REVIEWS))]
    keep = capped([c["participant_id"] for c in allowed], share)
    return [c for c, k in zip(allowed, keep) if k]
