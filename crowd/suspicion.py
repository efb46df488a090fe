"""Who looks like a troll, and where the rings are: the part of the Data quality view
(`crowd.quality`) about people. Pure functions; nothing here reads the clock.

The **suspicion score** in [0, 1] is a weighted sum of eight signals, each in [0, 1] and shown
on its own (WEIGHTS; a signal without evidence is 0):
- disagreement: share of the person's labels that differ from the majority of the *other
  blocs'* labels of the same item, where a bloc is a voice (`crowd.voices`) or a whole
  collusion cluster and casts one vote (its own majority): twenty puppets are one vote, so
  disagreeing with them does not make an honest person look like a troll (the person's own
  bloc is left out; ties give no majority), shrunk by n / (n + 5) so that two unlucky labels
  do not make a troll;
- rejected: share of their reviewed corrections (trusted, rejected or contested under the
  campaign's trust rule) that were rejected, shrunk by n / (n + 3);
- gold: share of their voice's gold answers that were wrong, shrunk by n / (n + 3);
- cluster: 1 when their voice is in a collusion cluster (`crowd.collusion`);
- crowding: log(pseudonyms of their voice) / log(CROWDED): 0 alone, 1 at 20 pseudonyms (the
  join limit) on one network; a venue's people and signed-in accounts are alone;
- speed: log10(crowd's median gap / their median gap) between consecutive actions, clipped:
  0 at or above the crowd's pace, 1 at ten times faster (needs 3 actions);
- duplicates: share of their rewrites with a near-twin among their own others (character
  3-gram Jaccard >= 0.8 after lower-casing and folding spaces);
- volume: log10(their actions / the median person's), clipped: 1 at ten times the median.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from crowd.assess import Assessment

if TYPE_CHECKING:
    from crowd.quality import QualityData

WEIGHTS = {
    "disagreement": 0.25,
    "rejected": 0.15,
    "gold": 0.15,
    "cluster": 0.15,
    "crowding": 0.1,
    "speed": 0.08,
    "duplicates": 0.07,
    "volume": 0.05,
}
CROWDED = 20  # pseudonyms on one voice at which the crowding signal is 1 (the join limit)
NEAR_TWIN = 0.8  # 3-gram Jaccard at or above which two texts are near-duplicates
TEXTS_PER_PERSON = 200  # the latest rewrites compared pairwise per person (bounds the cost)


@dataclass(frozen=True)
class Suspect:
    participant_id: str
    name: str
    hidden: bool
    score: float
    signals: dict[str, float]
    evidence: dict[str, float | int | str | None] = field(default_factory=dict)


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def bloc_of(trust: Assessment):
    """person -> their bloc: their collusion cluster ('cluster N') or else their voice."""

    def bloc(person: str) -> str:
        voice = trust.voice(person)
        index = trust.in_cluster.get(voice)
        return voice if index is None else f"cluster {index + 1}"

    return bloc


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


def rejected_counts(corrections: list[dict], trust: Assessment) -> dict[str, tuple[int, int]]:
    """person -> (rejected, decided): decided = trusted, rejected or contested."""
    result: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in corrections:
        status = trust.status(row["id"])
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
    gold: tuple[int, int] = (0, 0),
    in_cluster: bool = False,
    pseudonyms: int = 1,
) -> dict[str, float]:
    """The eight signals, each in [0, 1] (see the module docstring); `gold` is the voice's
    (right, wrong) gold answers, `pseudonyms` how many share the voice."""
    agreed, compared = agreement
    bad, decided = rejected
    right, wrong = gold
    actions, median_actions = volume
    speed = 0.0
    if gap is not None and crowd_gap:
        speed = _clip(math.log10(crowd_gap / max(gap, 0.5)))  # times have 1 s resolution
    answered = right + wrong
    return {
        "disagreement": (1 - agreed / compared) * compared / (compared + 5) if compared else 0.0,
        "rejected": bad / decided * decided / (decided + 3) if decided else 0.0,
        "gold": wrong / (answered + 3) if answered else 0.0,
        "cluster": float(in_cluster),
        "crowding": _clip(math.log(max(1, pseudonyms)) / math.log(CROWDED)),
        "speed": speed,
        "duplicates": _clip(duplicates),
        "volume": _clip(math.log10(actions / median_actions))
        if actions and median_actions
        else 0.0,
    }


def score(found: dict[str, float]) -> float:
    """The weighted sum of the signals, in [0, 1]."""
    return round(sum(WEIGHTS[name] * found[name] for name in WEIGHTS), 4)


def suspicion_queue(data: QualityData, agreement: dict[str, tuple[int, int]]) -> list[Suspect]:
    """Everyone who acted, highest suspicion first (ties by name); `agreement` is
    `crowd.quality.peer_agreement` by blocs."""
    trust = data.trust
    rejected = rejected_counts(data.corrections, trust)
    gaps = median_gaps(data.times)
    crowd_gap = statistics.median(gaps.values()) if gaps else None
    actions = Counter(who for who, _ in data.times)
    median_actions = statistics.median(actions.values()) if actions else 0.0
    texts: dict[str, list[str]] = defaultdict(list)
    for who, text in data.texts:
        texts[who].append(text)
    members = trust.voices.members()
    queue = []
    for row in data.people:
        pid = row["id"]
        voice = trust.voice(pid)
        gold = trust.gold.get(voice, (0, 0))
        cluster = trust.in_cluster.get(voice)
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
            gold,
            cluster is not None,
            len(members.get(voice, [pid])),
        )
        evidence: dict[str, float | int | str | None] = dict(
            agreed=agreed,
            compared=compared,
            rejected=bad,
            decided=decided,
            median_gap_s=gap,
            actions=n_actions,
            voice=voice,
            pseudonyms=len(members.get(voice, [pid])),
            gold_right=gold[0],
            gold_answered=sum(gold),
            cluster=None if cluster is None else cluster + 1,
        )
        hidden = bool(row["hidden_at"])
        queue.append(Suspect(pid, row["display_name"], hidden, score(found), found, evidence))
    return sorted(queue, key=lambda s: (-s.score, s.name))


# -- rings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceGroup:
    """One voice with the pseudonyms that share it: what the organizer hides or bans at once."""

    voice: str
    sources: list[str]  # its networks (and account)
    pseudonyms: list[str]  # participant ids
    cluster: int | None  # its collusion cluster (numbered from 1), if any


@dataclass(frozen=True)
class ClusterRow:
    number: int  # from 1
    voices: list[str]
    pseudonyms: int
    density: float
    endorsements: int
    expected: float


def source_groups(trust: Assessment) -> list[SourceGroup]:
    """Every voice seen in the campaign, most pseudonyms first."""
    groups = [
        SourceGroup(
            voice,
            sorted(trust.voices.sources.get(voice, ())),
            people,
            None if trust.in_cluster.get(voice) is None else trust.in_cluster[voice] + 1,
        )
        for voice, people in trust.voices.members().items()
    ]
    return sorted(groups, key=lambda g: (-len(g.pseudonyms), g.voice))


def cluster_rows(trust: Assessment) -> list[ClusterRow]:
    members = trust.voices.members()
    return [
        ClusterRow(
            i + 1,
            sorted(c.voices),
            sum(len(members.get(v, [v])) for v in c.voices),
            c.density,
            c.endorsements,
            c.expected,
        )
        for i, c in enumerate(trust.clusters)
    ]


def group_of(trust: Assessment, participant_id: str) -> list[str]:
    """Everyone the organizer's one action on `participant_id`'s group reaches: the pseudonyms
    of their voice and, when it is in a collusion cluster, of every voice of the cluster."""
    voice = trust.voice(participant_id)
    index = trust.in_cluster.get(voice)
    voices = [voice] if index is None else sorted(trust.clusters[index].voices)
    members = trust.voices.members()
    found = [p for v in voices for p in members.get(v, [])]
    return sorted(set(found) | {participant_id})
