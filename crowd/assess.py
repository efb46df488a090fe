"""The trust rule applied to one campaign's stored data: its voices, the gold record of each
voice, its collusion clusters, and what every correction's reviews add up to. Rounds, points,
the export, the quality view and a volunteer's review record all read trust through here, so
they agree (the rule itself is `crowd.trust`)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlite_utils import Database

from crowd.collusion import Cluster, cluster_of, clusters
from crowd.trust import (
    NO_REVIEWS,
    C,
    Tally,
    TrustRule,
    gold_weight,
    judging_corrections,
    rule_of,
    tallies,
    training_corrections,
)
from crowd.voices import Voices, parse_venues, voices_of
from storage import deals, reviews, sources
from storage.rows import Campaign


@dataclass(frozen=True)
class Assessment:
    rule: TrustRule
    share: float  # the campaign's per-voice cap
    voices: Voices
    gold: dict[str, tuple[int, int]]  # voice -> (right, wrong) gold answers
    clusters: list[Cluster]
    verdicts: dict[int, Tally]  # correction id -> what its counting reviews add up to
    authors: dict[int, str] = field(default_factory=dict)  # reviewed correction -> author
    in_cluster: dict[str, int] = field(default_factory=dict)  # voice -> its cluster's index

    def voice(self, pseudonym: str) -> str:
        return self.voices.of(pseudonym)

    def weight(self, voice: str) -> float:
        """What a voice's verdict weighs: nothing in a collusion cluster (an exposed ring),
        else its gold record's weight (`crowd.trust.gold_weight`)."""
        if voice in self.in_cluster:
            return 0.0
        answers = self.gold.get(voice)
        return gold_weight(*answers) if answers else 1.0

    def independent(self, reviewer: str, author: str) -> bool:
        """Whether `reviewer` is independent of `author`: another voice, no shared venue, not in
        the same collusion cluster."""
        if not self.voices.independent(reviewer, author):
            return False
        mine = self.in_cluster.get(self.voice(reviewer))
        return mine is None or mine != self.in_cluster.get(self.voice(author))

    def counts(self, reviewer: str, author: str) -> bool:
        """Whether `reviewer`'s review of `author`'s work counts toward trust: independent, and
        weighing something."""
        return self.independent(reviewer, author) and self.weight(self.voice(reviewer)) > 0

    def tally(self, correction_id: int) -> Tally:
        return self.verdicts.get(correction_id, NO_REVIEWS)

    def status(self, correction_id: int) -> str:
        return self.rule.status(self.tally(correction_id))

    def training(self, corrections: list[C]) -> list[C]:
        """One round's train-split corrections that train (`crowd.trust.training_corrections`)."""
        return training_corrections(corrections, self.verdicts, self.rule, self.share, self.voice)

    def judging(self, heldout: list[C]) -> list[C]:
        """The held-out corrections that judge (`crowd.trust.judging_corrections`)."""
        return judging_corrections(heldout, self.verdicts, self.rule, self.share, self.voice)


def voices(db: Database, campaign: Campaign) -> Voices:
    """The campaign's voices from its sightings (`crowd.voices`)."""
    return voices_of(
        sources.sightings(db, campaign["id"]),
        sources.accounts(db, campaign["id"]),
        parse_venues(campaign.get("venues") or ""),
    )


def assess(db: Database, campaign: Campaign) -> Assessment:
    """Everything trust needs for `campaign`, read in one go (one unit of work)."""
    found = voices(db, campaign)
    # 1. each voice's gold record, hence its weight
    gold: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for reviewer, right in deals.gold_answers(db, campaign["id"]):
        gold[found.of(reviewer)][not right] += 1
    record = {voice: (right, wrong) for voice, (right, wrong) in gold.items()}
    weights = {voice: gold_weight(*answers) for voice, answers in record.items()}

    def weight(voice: str) -> float:
        return weights.get(voice, 1.0)  # no gold answers yet: a full voice

    # 2. collusion clusters among voices that review each other independently of venues
    given = reviews.campaign_reviews(db, campaign["id"])
    authors = {cid: author for cid, _, author, _ in given}
    pairs = [
        (found.of(reviewer), found.of(author), verdict)
        for _, reviewer, author, verdict in given
        if found.independent(reviewer, author)
    ]
    found_clusters = clusters(pairs, weight)
    partial = Assessment(
        rule_of(campaign),
        campaign["person_cap"],
        found,
        record,
        found_clusters,
        {},
        authors,
        cluster_of(found_clusters),
    )
    # 3. what each correction's counting reviews add up to
    verdicts = tallies(
        ((cid, reviewer, verdict) for cid, reviewer, _, verdict in given),
        lambda cid, reviewer: partial.counts(reviewer, authors[cid]),
        lambda reviewer: partial.weight(found.of(reviewer)),
        deals.confirmed(db, campaign["id"]),
        found.of,
    )
    return Assessment(
        partial.rule,
        partial.share,
        found,
        record,
        found_clusters,
        verdicts,
        authors,
        partial.in_cluster,
    )
