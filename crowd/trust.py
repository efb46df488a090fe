"""What the crowd's reviews make of a correction: the campaign's trust rule, in one place.

A correction's reviews are endorsements and rejections by people other than its author. Once it
has at least `min_reviews`, their balance decides: more endorsements than rejections makes it
*trusted*, more rejections *rejected*, a tie *contested*. Before that it is *unreviewed* (no
review yet) or *pending*. Training uses every correction but rejected ones; the held-out set that
judges the groups uses trusted ones only (with the organizer's reference data); points go to
corrections that were used and not rejected. A review *agrees* when its verdict matches the
final consensus (trusted: endorse; rejected: reject); contested and pending ones have none yet.
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
        """May this correction be a training example? Everything but rejected ones."""
        return not self.on or self.status(endorsements, rejections) != "rejected"

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
