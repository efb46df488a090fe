"""Collusion clusters: voices that endorse each other far more than dealing explains.

Reviews are dealt, so under honest reviewing a voice `u` endorses author `v`'s items about as
often as everyone else does: the rate dealing produces "by chance" is `v`'s endorsement rate
among the other reviewers (weighted by their gold record, leaving `u` out). `u`'s *excess* on
`v` is its endorsements of `v`'s items beyond that rate. A pair that endorses each other with
excess both ways is an edge of the mutual-endorsement graph, weighted by the excess.

The graph is split into communities by the Louvain method (Blondel, Guillaume, Lambiotte and
Lefebvre 2008, "Fast unfolding of communities in large networks"; networkx's
`louvain_communities`, seeded so that the same reviews give the same clusters). A community is
a **collusion cluster** when it is dense and its endorsements are far above chance, by the
constants in `crowd.trust`: enough voices, enough of its pairs linked, a lift (endorsements
inside / the chance rate for the same items) and an excess large enough not to be luck.

What it cannot do: when a ring outnumbers the honest voices and no gold item has exposed it,
the honest minority is the one whose endorsements look unusual, and no rule that reads the
crowd's reviews alone can tell the two apart. Gold items anchor it (a ring that rejects good
gold weighs nothing, so everyone else's rate is the honest one); sign-in keeps a ring from
having many voices in the first place.
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
    CLUSTER_MIN_VOICES,
)


@dataclass(frozen=True)
class Cluster:
    voices: frozenset[str]
    density: float  # share of member pairs that endorse each other beyond chance
    endorsements: int  # endorsements between members
    expected: float  # what the chance rate would have given for the same reviews
    reviews: int  # reviews between members

    @property
    def lift(self) -> float:
        return self.endorsements / self.expected if self.expected else float("inf")


def clusters(
    reviews: Iterable[tuple[str, str, str]], weight: Callable[[str], float] = lambda v: 1.0
) -> list[Cluster]:
    """Collusion clusters among the voices of `reviews` (reviewer voice, author voice, verdict),
    largest first. Reviews of one's own voice are left out."""
    # 1. per ordered pair: reviews and endorsements; per author: weighted totals
    n: dict[tuple[str, str], int] = defaultdict(int)
    e: dict[tuple[str, str], int] = defaultdict(int)
    for reviewer, author, verdict in reviews:
        if reviewer != author:
            n[(reviewer, author)] += 1
            e[(reviewer, author)] += verdict == "endorse"
    seen: dict[str, float] = defaultdict(float)
    liked: dict[str, float] = defaultdict(float)
    for (u, v), count in n.items():
        seen[v] += weight(u) * count
        liked[v] += weight(u) * e[(u, v)]

    # 2. the chance rate of u on v's items (leaving u out), and u's excess over it
    def chance(u: str, v: str) -> float:
        rest = seen[v] - weight(u) * n[(u, v)]
        return (liked[v] - weight(u) * e[(u, v)]) / rest if rest > 0 else 0.0

    excess = {(u, v): e[(u, v)] - n[(u, v)] * chance(u, v) for (u, v) in n}
    # 3. the mutual-endorsement graph and its communities
    graph = nx.Graph()
    for (u, v), x in excess.items():
        back = excess.get((v, u), 0.0)
        if u < v and x > 0 and back > 0:
            graph.add_edge(u, v, weight=x + back)
    found = []
    for members in nx.community.louvain_communities(graph, weight="weight", seed=0):
        cluster = _measure(frozenset(members), graph, n, e, chance)
        if _colluding(cluster):
            found.append(cluster)
    return sorted(found, key=lambda c: (-len(c.voices), sorted(c.voices)))


def _measure(members: frozenset[str], graph: nx.Graph, n, e, chance) -> Cluster:
    pairs = [(u, v) for u in members for v in members if u != v and (u, v) in n]
    linked = graph.subgraph(members).number_of_edges()
    possible = len(members) * (len(members) - 1) / 2
    return Cluster(
        voices=members,
        density=linked / possible if possible else 0.0,
        endorsements=sum(e[p] for p in pairs),
        expected=sum(n[p] * chance(*p) for p in pairs),
        reviews=sum(n[p] for p in pairs),
    )


def _colluding(c: Cluster) -> bool:
    return (
        len(c.voices) >= CLUSTER_MIN_VOICES
        and c.density >= CLUSTER_MIN_DENSITY
        and c.endorsements - c.expected >= CLUSTER_MIN_EXCESS
        and c.lift >= CLUSTER_MIN_LIFT
    )


def cluster_of(found: list[Cluster]) -> dict[str, int]:
    """voice -> the index of its cluster in `found`."""
    return {voice: i for i, cluster in enumerate(found) for voice in cluster.voices}
