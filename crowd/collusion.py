"""Collusion clusters: voices that endorse each other far more than the rest of the crowd
endorses the same authors.

Reviews are dealt, so under honest reviewing a voice `u` endorses author `v`'s items about as
often as everyone else does. `u`'s *excess* on `v` is its endorsements of `v`'s items beyond
the rate the other reviewers give them (weighted by their gold record, leaving `u` out). A
pair that endorses each other with excess both ways is an edge of the mutual-endorsement
graph, weighted by the excess; the graph is split into communities by the Louvain method
(Blondel, Guillaume, Lambiotte and Lefebvre 2008, "Fast unfolding of communities in large
networks"; networkx's `louvain_communities`, seeded so that the same reviews give the same
clusters).

A community is a **collusion cluster** when, by the constants in `crowd.trust`: it has enough
voices; enough of its pairs are linked (its mutual-endorsement density); its members endorse
each other at least CLUSTER_MIN_LIFT times as often as the reviewers *outside* it endorse the
same authors (what dealing gives by chance: members cannot vouch for each other's chance rate),
by an excess too large to be luck; enough outside reviews back that rate; and it holds less
than half of the reviewers' weight. Clusters are taken one at a time, the most anomalous first,
and from then on an exposed cluster's verdicts weigh nothing in anyone's chance rate, so a ring
that rejects part of the honest crowd's work does not make that part look like a second ring.

What it cannot do: two camps that endorse their own and reject the other look alike from the
reviews alone; the rule presumes the camp with the larger weight honest. When a ring
outnumbers the honest voices and no gold item has exposed it, that presumption is wrong. Gold
items anchor it (a ring that rejects good gold weighs nothing, so the honest camp carries the
weight); sign-in keeps a ring from having many voices in the first place.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import networkx as nx

from crowd.trust import (
    CLUSTER_MIN_DENSITY,
    CLUSTER_MIN_EXCESS,
    CLUSTER_MIN_LIFT,
    CLUSTER_MIN_OUTSIDE,
    CLUSTER_MIN_VOICES,
)

Pairs = dict[tuple[str, str], int]  # (reviewer voice, author voice) -> count
Weight = Callable[[str], float]


@dataclass(frozen=True)
class Cluster:
    voices: frozenset[str]
    density: float  # share of member pairs that endorse each other beyond chance
    endorsements: int  # endorsements between members
    expected: float  # what the outside reviewers' rate would give for the same reviews
    reviews: int  # reviews between members
    outside: float = 0.0  # weight of the outside reviews of members' items (the evidence)
    share: float = 0.0  # the community's share of all reviewers' weight

    @property
    def lift(self) -> float:
        return self.endorsements / self.expected if self.expected else float("inf")


def clusters(
    reviews: Iterable[tuple[str, str, str]], weight: Weight = lambda v: 1.0
) -> list[Cluster]:
    """Collusion clusters among the voices of `reviews` (reviewer voice, author voice, verdict),
    the most anomalous first. Reviews of one's own voice are left out."""
    n: Pairs = defaultdict(int)
    e: Pairs = defaultdict(int)
    for reviewer, author, verdict in reviews:
        if reviewer != author:
            n[(reviewer, author)] += 1
            e[(reviewer, author)] += verdict == "endorse"
    found: list[Cluster] = []
    exposed: frozenset[str] = frozenset()
    while True:
        weighed = _without(weight, exposed)
        colluding = [
            c for c in _communities(n, e, weighed) if not c.voices & exposed and _colluding(c)
        ]
        if not colluding:
            return found
        worst = max(colluding, key=lambda c: (c.lift, c.endorsements - c.expected))
        found.append(worst)
        exposed |= worst.voices


def cluster_of(found: list[Cluster]) -> dict[str, int]:
    """voice -> the index of its cluster in `found`."""
    return {voice: i for i, cluster in enumerate(found) for voice in cluster.voices}


def _without(weight: Weight, exposed: frozenset[str]) -> Weight:
    return lambda voice: 0.0 if voice in exposed else weight(voice)


def _communities(n: Pairs, e: Pairs, weight: Weight) -> list[Cluster]:
    """The Louvain communities of the mutual-endorsement graph, measured."""
    # 1. per author: what everyone's (weighted) reviews of their items add up to
    seen: dict[str, float] = defaultdict(float)
    liked: dict[str, float] = defaultdict(float)
    for (u, v), count in n.items():
        seen[v] += weight(u) * count
        liked[v] += weight(u) * e[(u, v)]

    # 2. u's excess on v: endorsements beyond the others' rate for v's items
    def excess(u: str, v: str) -> float:
        rest = seen[v] - weight(u) * n[(u, v)]
        rate = (liked[v] - weight(u) * e[(u, v)]) / rest if rest > 0 else 0.0
        return e[(u, v)] - n[(u, v)] * rate

    # 3. the mutual-endorsement graph and its communities
    graph = nx.Graph()
    for u, v in n:
        if u < v and (v, u) in n:
            there, back = excess(u, v), excess(v, u)
            if there > 0 and back > 0:
                graph.add_edge(u, v, weight=there + back)
    reviewers = {u for u, _ in n}
    total = sum(weight(u) for u in reviewers)
    return [
        _measure(frozenset(members), graph, n, e, seen, liked, weight, total)
        for members in nx.community.louvain_communities(graph, weight="weight", seed=0)
    ]


def _measure(members, graph, n: Pairs, e: Pairs, seen, liked, weight: Weight, total) -> Cluster:
    """A community's density, and its endorsements inside against what the reviewers outside
    it give the same authors."""
    pairs = [(u, v) for u in members for v in members if u != v and (u, v) in n]
    rate, evidence = {}, 0.0
    for v in members:
        own_seen = sum(weight(u) * n.get((u, v), 0) for u in members)
        own_liked = sum(weight(u) * e.get((u, v), 0) for u in members)
        rest = seen[v] - own_seen
        rate[v] = (liked[v] - own_liked) / rest if rest > 0 else 0.0
        evidence += rest
    possible = len(members) * (len(members) - 1) / 2
    return Cluster(
        voices=members,
        density=graph.subgraph(members).number_of_edges() / possible if possible else 0.0,
        endorsements=sum(e[p] for p in pairs),
        expected=sum(n[(u, v)] * rate[v] for u, v in pairs),
        reviews=sum(n[p] for p in pairs),
        outside=evidence,
        share=sum(weight(v) for v in members) / total if total else 0.0,
    )


def _colluding(c: Cluster) -> bool:
    return (
        len(c.voices) >= CLUSTER_MIN_VOICES
        and c.density >= CLUSTER_MIN_DENSITY
        and c.endorsements - c.expected >= CLUSTER_MIN_EXCESS
        and c.lift >= CLUSTER_MIN_LIFT
        and c.outside >= CLUSTER_MIN_OUTSIDE
        and c.share < 0.5
    )
