"""Data quality: how far the crowd agrees, how much of its work was reviewed, who looks like a
troll, and where the rings are. Pure functions on plain rows from `storage.quality` and the
campaign's trust assessment (`crowd.assess`); nothing here reads the clock.

Agreement is Krippendorff's alpha (nominal), from the `krippendorff` package, over three
families of labels: emotion labels (item: a reply), A/B picks (item: a reply pair) and review
verdicts (item: a correction). Only items labelled by two or more people count. Alpha is 1 for
perfect agreement, 0 for chance, below 0 for systematic disagreement; it is missing (None, with
a note) when no item has two labels or when every label is the same value.

The **suspicion score**, the rings and who shares a source: `crowd.suspicion`.
Hidden people are scored (so that an organizer sees why), but their labels never count as
anyone's peers, nor in alpha or coverage.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import krippendorff
import numpy as np
from sqlite_utils import Database

from crowd.assess import Assessment, assess
from crowd.suspicion import (
    TEXTS_PER_PERSON,
    ClusterRow,
    SourceGroup,
    Suspect,
    bloc_of,
    cluster_rows,
    source_groups,
    suspicion_queue,
)
from storage import quality as quality_store
from storage import rounds as store
from storage import sources

FAMILIES = ("emotion", "choice", "review")

# (family, round id, item, person, value, person hidden): a row of storage.quality.labels
Label = tuple[str, int, str, str, str, bool]


@dataclass(frozen=True)
class Agreement:
    family: str
    round: int | None  # the round's number; None for the whole campaign
    alpha: float | None
    items: int  # items labelled by two or more people
    labels: int  # labels on those items
    note: str = ""  # why alpha is missing


@dataclass(frozen=True)
class Coverage:
    round: int | None  # None for the whole campaign
    live: int  # live corrections (hidden people left out)
    covered: int  # of those, with at least min_reviews reviews


@dataclass(frozen=True)
class QualityData:
    """Everything the report reads, as `storage.quality` returns it."""

    rounds: dict[int, int]  # round id -> number
    people: list[dict]  # id, display_name, hidden_at
    labels: list[Label]
    corrections: list[dict]  # kept: id, participant_id, round_id, kind, person_hidden
    trust: Assessment  # voices, gold records, clusters and every correction's tally
    names: dict[str, str]  # pseudonym -> display name, for everyone seen in the campaign
    times: list[tuple[str, str]]  # (person, ISO time) of every action
    texts: list[tuple[str, str]]  # (person, rewrite)


@dataclass(frozen=True)
class QualityReport:
    agreement: list[Agreement]
    coverage: list[Coverage]
    suspects: list[Suspect]  # highest score first
    sources: list[SourceGroup]  # every voice, most pseudonyms first
    clusters: list[ClusterRow]  # collusion clusters, largest first
    names: dict[str, str]  # pseudonym -> display name, for everyone seen


def quality_report(data: QualityData) -> QualityReport:
    """The whole Data quality view of one campaign."""
    agreement = peer_agreement(data.labels, bloc_of(data.trust))
    return QualityReport(
        agreement_table(data.labels, data.rounds),
        coverage_table(data.corrections, data.trust, data.rounds),
        suspicion_queue(data, agreement),
        source_groups(data.trust),
        cluster_rows(data.trust),
        data.names,
    )


# -- agreement --------------------------------------------------------------------------------


def nominal_alpha(items: dict[str, dict[str, str]]) -> Agreement:
    """Krippendorff's alpha (nominal) of item -> person -> value; family and round left blank."""
    pairable = [values for values in items.values() if len(values) >= 2]
    n_labels = sum(len(values) for values in pairable)
    if not pairable:
        return Agreement("", None, None, 0, 0, "no item labelled by two people yet")
    domain = sorted({v for values in pairable for v in values.values()})
    if len(domain) < 2:
        return Agreement("", None, None, len(pairable), n_labels, "every label is the same")
    index = {value: i for i, value in enumerate(domain)}
    counts = np.zeros((len(pairable), len(domain)), dtype=np.int64)
    for row, values in enumerate(pairable):
        for value in values.values():
            counts[row, index[value]] += 1
    alpha = float(krippendorff.alpha(value_counts=counts, level_of_measurement="nominal"))
    if not math.isfinite(alpha):  # no expected disagreement to compare with
        return Agreement("", None, None, len(pairable), n_labels, "not defined for these labels")
    return Agreement("", None, alpha, len(pairable), n_labels)


def _by_item(labels: Iterable[Label]) -> dict[tuple[str, int, str], dict[str, str]]:
    """(family, round id, item) -> person -> value, hidden people's labels left out."""
    items: dict[tuple[str, int, str], dict[str, str]] = defaultdict(dict)
    for family, round_id, item, person, value, hidden in labels:
        if not hidden:
            items[(family, round_id, item)][person] = value
    return items


def agreement_table(labels: list[Label], rounds: dict[int, int]) -> list[Agreement]:
    """Alpha per family for the whole campaign, then per round (in round order)."""
    items = _by_item(labels)
    rows = []
    for family in FAMILIES:
        mine = {key: values for key, values in items.items() if key[0] == family}
        scopes: list[tuple[int | None, set[int] | None]] = [(None, None)]
        scopes += [(rounds[r], {r}) for r in sorted(rounds, key=rounds.__getitem__)]
        for number, ids in scopes:
            chosen = {k[2]: v for k, v in mine.items() if ids is None or k[1] in ids}
            found = nominal_alpha(chosen)
            rows.append(
                Agreement(family, number, found.alpha, found.items, found.labels, found.note)
            )
    return rows


def peer_agreement(
    labels: list[Label], bloc: Callable[[str], str] = str
) -> dict[str, tuple[int, int]]:
    """person -> (labels agreeing with the others' majority, labels compared). Each label is
    compared with the most common value among the *other blocs'* votes on the same item: a
    bloc (`bloc(person)`: a voice or a collusion cluster) casts one vote, its members' most
    common value; the person's own bloc is left out. No other vote, or a tie at the top,
    compares nothing."""
    peers = _by_item(labels)
    result: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for family, round_id, item, person, value, _hidden in labels:
        mine = bloc(person)
        votes: dict[str, Counter] = defaultdict(Counter)
        for p, v in peers.get((family, round_id, item), {}).items():
            if bloc(p) != mine:
                votes[bloc(p)][v] += 1
        others = Counter(c.most_common(1)[0][0] for c in votes.values())
        top = others.most_common(2)
        if not top or (len(top) == 2 and top[0][1] == top[1][1]):
            continue
        result[person][1] += 1
        result[person][0] += int(value == top[0][0])
    return {person: (agreed, compared) for person, (agreed, compared) in result.items()}


# -- coverage ---------------------------------------------------------------------------------


def coverage_table(
    corrections: list[dict], trust: Assessment, rounds: dict[int, int]
) -> list[Coverage]:
    """Live corrections with at least `min_reviews` counting reviews (`crowd.trust`): the
    campaign, then each round."""
    live: Counter[int] = Counter()
    covered: Counter[int] = Counter()
    for row in corrections:
        if row["person_hidden"]:
            continue
        live[row["round_id"]] += 1
        covered[row["round_id"]] += int(trust.tally(row["id"]).reviews >= trust.rule.min_reviews)
    rows = [Coverage(None, sum(live.values()), sum(covered.values()))]
    for round_id in sorted(rounds, key=rounds.__getitem__):
        rows.append(Coverage(rounds[round_id], live[round_id], covered[round_id]))
    return rows


def load(db: Database, campaign_id: int) -> QualityData:
    """Read what the report needs for one campaign (one unit of work)."""
    corrections = quality_store.kept_corrections(db, campaign_id)
    campaign = store.get_campaign(db, campaign_id)
    if campaign is None:
        raise LookupError(f"no campaign {campaign_id}")
    return QualityData(
        rounds={r["id"]: r["number"] for r in store.rounds_of(db, campaign_id)},
        people=quality_store.people(db, campaign_id),
        labels=quality_store.labels(db, campaign_id),
        corrections=corrections,
        trust=assess(db, campaign),
        names=sources.names(db, campaign_id),
        times=quality_store.action_times(db, campaign_id),
        texts=quality_store.rewrite_texts(db, campaign_id, TEXTS_PER_PERSON),
    )
