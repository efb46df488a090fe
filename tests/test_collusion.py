"""Collusion clusters (issue 26): voices that endorse each other far more than everyone else
endorses the same authors, found by Louvain communities of the mutual-endorsement graph
(`crowd.collusion`), and what they change: reviews inside a cluster do not count."""

from __future__ import annotations

import random

from crowd.collusion import clusters

HONEST = [f"h{i}" for i in range(8)]
RING = ["r0", "r1", "r2"]


def crowd_reviews(rng: random.Random, ring_endorses_ring: bool = True) -> list[tuple]:
    """Each voice reviews a few items of each other voice, as dealing spreads them: honest
    voices endorse honest work (90 %) and reject the ring's; the ring endorses its own and
    rejects the rest."""
    reviews = []
    for reviewer in HONEST + RING:
        for author in HONEST + RING:
            if reviewer == author:
                continue
            for _ in range(3):
                if reviewer in RING:
                    good = author in RING if ring_endorses_ring else False
                else:
                    good = author in HONEST and rng.random() < 0.9
                reviews.append((reviewer, author, "endorse" if good else "reject"))
    return reviews


def test_an_honest_crowd_has_no_cluster():
    rng = random.Random(0)
    reviews = [
        (u, v, "endorse" if rng.random() < 0.9 else "reject")
        for u in HONEST
        for v in HONEST
        if u != v
        for _ in range(3)
    ]
    assert clusters(reviews) == []


def test_a_ring_spread_over_three_networks_is_one_cluster_and_the_honest_crowd_is_none():
    found = clusters(crowd_reviews(random.Random(1)))
    assert len(found) == 1
    ring = found[0]
    assert ring.voices == frozenset(RING) and ring.density == 1.0
    assert ring.endorsements == 18 and ring.lift >= 2


def test_a_ring_that_does_not_endorse_itself_is_no_cluster():
    assert clusters(crowd_reviews(random.Random(2), ring_endorses_ring=False)) == []


def test_when_the_ring_outnumbers_the_crowd_gold_weights_tell_them_apart():
    global HONEST, RING
    honest, ring = HONEST, RING
    try:
        HONEST, RING = [f"h{i}" for i in range(3)], [f"r{i}" for i in range(8)]
        reviews = crowd_reviews(random.Random(3))
        blind = clusters(reviews)  # without gold, the honest minority looks unusual
        assert any(set(c.voices) == set(HONEST) for c in blind)
        anchored = clusters(reviews, weight=lambda v: 0.0 if v.startswith("r") else 1.0)
        assert [set(c.voices) for c in anchored] == [set(RING)]
    finally:
        HONEST, RING = honest, ring


# -- through the service: a ring spread over a few networks -----------------------------------

SPAM = "Buy cheap followers now"


def test_a_ring_spread_over_three_networks_through_dealt_reviews(settings, new_generation):
    """Three networks of four puppets each write spam, endorse each other's spam whenever they
    are dealt it, and reject everything else; nine honest volunteers on nine networks write
    good rewrites and review what they are dealt. The ring is found as one cluster, its
    verdicts weigh nothing, and it owns at most 10 % of any group's training (0 % when this
    was written, with all 27 honest rewrites training)."""
    from crowd.assess import assess
    from crowd.limits import Limits
    from crowd.review import Reviews
    from crowd.rounds.material import training_material
    from crowd.service import CrowdService, context_of
    from storage.db import connect

    generation = new_generation(max_new_tokens=2)
    limits = Limits(chats_per_minute=10**4, submissions_per_minute=10**4, reviews_per_minute=10**4)
    service = CrowdService(settings, generation, limits=limits)
    reviews = Reviews(service)

    def at(n: int) -> dict:
        return {"address": f"203.0.{n}.9"}

    def rewrite(token: str, text: str, n: int) -> None:
        reply = list(service.send(token, None, "Say something nice.", **at(n)))[-1]
        service.rewrite(token, reply.message_id, text, **at(n))

    def review_all(token: str, n: int, verdict_of) -> None:
        for item in reviews.queue(token, 10, **at(n)):
            reviews.review(token, item["item_id"], verdict_of(item), **at(n))

    try:
        honest = [(service.join(f"Honest {i}", True, **at(i)).token, i) for i in range(9)]
        ring = [
            (service.join(f"Puppet {i}", True, **at(100 + i % 3)).token, 100 + i % 3)
            for i in range(12)
        ]
        for token, n in honest:
            for j in range(3):
                rewrite(token, f"What a lovely day, thank you {n}-{j}!", n)
        for token, n in ring:
            for j in range(5):
                rewrite(token, f"{SPAM} {n}-{j}", n)
        for token, n in ring:
            review_all(token, n, lambda i: "endorse" if i["rewrite"].startswith(SPAM) else "reject")
        for token, n in honest:
            review_all(token, n, lambda i: "reject" if i["rewrite"].startswith(SPAM) else "endorse")
        with connect(service.settings.db_path) as db:
            campaign, round_ = context_of(db)
            trust = assess(db, campaign)
            data, _ = training_material(db, campaign, round_)
    finally:
        generation.close()
    assert [sorted(c.voices) for c in trust.clusters] == [
        ["net:203.0.100.0/24", "net:203.0.101.0/24", "net:203.0.102.0/24"]
    ]
    shares = {
        g: sum(e.messages[-1]["content"].startswith(SPAM) for e in d.sft) / max(1, len(d.sft))
        for g, d in data.items()
    }
    honest_rows = sum(
        not e.messages[-1]["content"].startswith(SPAM) for d in data.values() for e in d.sft
    )
    print(shares, honest_rows)
    assert max(shares.values()) <= 0.10 and honest_rows > 0
