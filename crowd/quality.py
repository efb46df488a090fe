"""Data quality: how far the crowd agrees, how much of its work was reviewed, and who looks
like a troll. Pure functions on plain rows from `storage.quality`; nothing here reads the clock.

Agreement is Krippendorff's alpha (nominal), from the `krippendorff` package, over three
families of labels: emotion labels (item: a reply), A/B picks (item: a reply pair) and review
verdicts (item: a correction). Only items labelled by two or more people count. Alpha is 1 for
perfect agreement, 0 for chance, below 0 for systematic disagreement; it is missing (None, with
a note) when no item has two labels or when every label is the same value.

The **suspicion score** in [0, 1] is a weighted sum of five signals, each in [0, 1] and shown
on its own (WEIGHTS; a signal without evidence is 0):
- disagreement: share of the person's labels that differ from the majority of the *other*
  labels of the same item (leave-one-out; ties give no majority), shrunk by n / (n + 5) so
  that two unlucky labels do not make a troll;
- rejected: share of their reviewed corrections (trusted, rejected or contested under the
  campaign's min_reviews) that were rejected, shrunk by n / (n + 3);
- speed: log10(crowd's median gap / their median gap) between consecutive actions, clipped:
  0 at or above the crowd's pace, 1 at ten times faster (needs 3 actions);
- duplicates: share of their rewrites with a near-twin among their own others (character
  3-gram Jaccard >= 0.8 after lower-casing and folding spaces);
- volume: log10(their actions / the median person's), clipped: 1 at ten times the median.
Hidden people are scored (so that an organizer sees why), but their labels never count as
anyone's peers, nor in alpha or coverage.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import krippendorff
import numpy as np
from sqlite_utils import Database

from crowd.trust import TrustRule
from storage import quality as quality_store
from storage import rounds as store
from storage.reviews import review_counts

FAMILIES = ("emotion", "choice", "review")
WEIGHTS = {"disagreement": 0.35, "rejected": 0.25, "speed": 0.15, "duplicates": 0.15, "volume": 0.1}
NEAR_TWIN = 0.8  # 3-gram Jaccard at or above which two texts are near-duplicates
TEXTS_PER_PERSON = 200  # the latest rewrites compared pairwise per person (bounds the cost)

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
class Suspect:
    participant_id: str
    name: str
    hidden: bool
    score: float
    signals: dict[str, float]
    evidence: dict[str, float | int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class QualityData:
    """Everything the report reads, as `storage.quality` returns it."""

    rounds: dict[int, int]  # round id -> number
    people: list[dict]  # id, display_name, hidden_at
    labels: list[Label]
    corrections: list[dict]  # kept: id, participant_id, round_id, kind, person_hidden
    review_counts: dict[int, tuple[int, int]]  # correction id -> (endorsements, rejections)
    times: list[tuple[str, str]]  # (person, ISO time) of every action
    texts: list[tuple[str, str]]  # (person, rewrite)


@dataclass(frozen=True)
class QualityReport:
    agreement: list[Agreement]
    coverage: list[Coverage]
    suspects: list[Suspect]  # highest score first


def quality_report(data: QualityData, min_reviews: int) -> QualityReport:
    """The whole Data quality view of one campaign."""
    return QualityReport(
        agreement_table(data.labels, data.rounds),
        coverage_table(data.corrections, data.review_counts, min_reviews, data.rounds),
        suspicion_queue(data, TrustRule(min_reviews=min_reviews)),
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
        scopes += [(rounds[r], {r}) for r in sorted(rounds, key=rounds.get)]
        for number, ids in scopes:
            chosen = {k[2]: v for k, v in mine.items() if ids is None or k[1] in ids}
            found = nominal_alpha(chosen)
            rows.append(
                Agreement(family, number, found.alpha, found.items, found.labels, found.note)
            )
    return rows


def peer_agreement(labels: list[Label]) -> dict[str, tuple[int, int]]:
    """person -> (labels agreeing with the others' majority, labels compared). Each label is
    compared with the most common value among the *other* people's labels of the same item;
    an item with no other label, or a tie at the top, compares nothing."""
    peers = _by_item(labels)
    result: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for family, round_id, item, person, value, _hidden in labels:
        others = Counter(
            v for p, v in peers.get((family, round_id, item), {}).items() if p != person
        )
        top = others.most_common(2)
        if not top or (len(top) == 2 and top[0][1] == top[1][1]):
            continue
        result[person][1] += 1
        result[person][0] += int(value == top[0][0])
    return {person: (agreed, compared) for person, (agreed, compared) in result.items()}


# -- coverage ---------------------------------------------------------------------------------


def coverage_table(
    corrections: list[dict],
    counts: dict[int, tuple[int, int]],
    min_reviews: int,
    rounds: dict[int, int],
) -> list[Coverage]:
    """Live corrections with at least `min_reviews` reviews: the campaign, then each round."""
    live: Counter[int] = Counter()
    covered: Counter[int] = Counter()
    for row in corrections:
        if row["person_hidden"]:
            continue
        live[row["round_id"]] += 1
        covered[row["round_id"]] += int(sum(counts.get(row["id"], (0, 0))) >= min_reviews)
    rows = [Coverage(None, sum(live.values()), sum(covered.values()))]
    for round_id in sorted(rounds, key=rounds.get):
        rows.append(Coverage(rounds[round_id], live[round_id], covered[round_id]))
    return rows


# -- suspicion --------------------------------------------------------------------------------


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def median_gaps(times: list[tuple[str, str]]) -> dict[str, float]:
    """person -> median seconds between consecutive actions (people with 3+ actions)."""
    stamps: dict[str, list[float]] = defaultdict(list)
    for person, when in times:
        stamps[person].append(datetime.fromisoformat(when).timestamp())
    gaps = {}
    for person, seen in stamps.items():
        seen.sort()
        if len(seen) >= 3:
            gaps[person] = statistics.median(b - a for a, b in zip(seen, seen[1:]))
    return gaps


def trigrams(text: str) -> frozenset[str]:
    folded = " ".join(text.lower().split())
    return frozenset(folded[i : i + 3] for i in range(max(1, len(folded) - 2)))


def near_duplicate_share(texts: list[str]) -> float:
    """Share of `texts` with a near-twin (3-gram Jaccard >= NEAR_TWIN) among the others."""
    grams = [trigrams(t) for t in texts[:TEXTS_PER_PERSON]]
    twinned = [False] * len(grams)
    for i, a in enumerate(grams):
        for j in range(i + 1, len(grams)):
            b = grams[j]
            if (twinned[i] and twinned[j]) or not a or not b:
                continue
            if len(a & b) >= NEAR_TWIN * len(a | b):
                twinned[i] = twinned[j] = True
    return sum(twinned) / len(grams) if grams else 0.0


def rejected_counts(
    corrections: list[dict], counts: dict[int, tuple[int, int]], rule: TrustRule
) -> dict[str, tuple[int, int]]:
    """person -> (rejected, decided): decided = trusted, rejected or contested."""
    result: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in corrections:
        status = rule.status(*counts.get(row["id"], (0, 0)))
        if status in ("trusted", "rejected", "contested"):
            result[row["participant_id"]][1] += 1
            result[row["participant_id"]][0] += int(status == "rejected")
    return {person: (bad, n) for person, (bad, n) in result.items()}


def signals(
    agreement: tuple[int, int],
    rejected: tuple[int, int],
    gap: float | None,
    crowd_gap: float | None,
    duplicates: float,
    volume: tuple[int, float],
) -> dict[str, float]:
    """The five signals, each in [0, 1] (see the module docstring)."""
    agreed, compared = agreement
    bad, decided = rejected
    actions, median_actions = volume
    speed = 0.0
    if gap is not None and crowd_gap:
        speed = _clip(math.log10(crowd_gap / max(gap, 0.5)))  # times have 1 s resolution
    return {
        "disagreement": (1 - agreed / compared) * compared / (compared + 5) if compared else 0.0,
        "rejected": bad / decided * decided / (decided + 3) if decided else 0.0,
        "speed": speed,
        "duplicates": _clip(duplicates),
        "volume": _clip(math.log10(actions / median_actions))
        if actions and median_actions
        else 0.0,
    }


def score(found: dict[str, float]) -> float:
    """The weighted sum of the signals, in [0, 1]."""
    return round(sum(WEIGHTS[name] * found[name] for name in WEIGHTS), 4)


def suspicion_queue(data: QualityData, rule: TrustRule) -> list[Suspect]:
    """Everyone who acted, highest suspicion first (ties by name)."""
    agreement = peer_agreement(data.labels)
    rejected = rejected_counts(data.corrections, data.review_counts, rule)
    gaps = median_gaps(data.times)
    crowd_gap = statistics.median(gaps.values()) if gaps else None
    actions = Counter(who for who, _ in data.times)
    median_actions = statistics.median(actions.values()) if actions else 0.0
    texts: dict[str, list[str]] = defaultdict(list)
    for who, text in data.texts:
        texts[who].append(text)
    queue = []
    for row in data.people:
        pid = row["id"]
        agreed, compared = agreement.get(pid, (0, 0))
        bad, decided = rejected.get(pid, (0, 0))
        gap, n_actions = gaps.get(pid), actions.get(pid, 0)
        found = signals(
            (agreed, compared),
            (bad, decided),
            gap,
            crowd_gap,
            near_duplicate_share(texts.get(pid, [])),
            (n_actions, median_actions),
        )
        evidence = dict(
            agreed=agreed, compared=compared, rejected=bad, decided=decided, median_gap_s=gap
        )
        evidence["actions"] = n_actions
        hidden = bool(row["hidden_at"])
        queue.append(Suspect(pid, row["display_name"], hidden, score(found), found, evidence))
    return sorted(queue, key=lambda s: (-s.score, s.name))


def load(db: Database, campaign_id: int) -> QualityData:
    """Read what the report needs for one campaign (one unit of work)."""
    corrections = quality_store.kept_corrections(db, campaign_id)
    return QualityData(
        rounds={r["id"]: r["number"] for r in store.rounds_of(db, campaign_id)},
        people=quality_store.people(db, campaign_id),
        labels=quality_store.labels(db, campaign_id),
        corrections=corrections,
        review_counts=review_counts(db, [row["id"] for row in corrections]),
        times=quality_store.action_times(db, campaign_id),
        texts=quality_store.rewrite_texts(db, campaign_id, TEXTS_PER_PERSON),
    )
