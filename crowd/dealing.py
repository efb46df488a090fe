"""Which items the server deals a reviewer: the rule, as a pure function (`crowd.review` reads
the data and stores the deals).

Reviewers do not choose what they review (Dynabench and crowd-work platforms assign items to
validators for the same reason): a ring that may pick its own items reviews itself, and a
queue that deals the fewest-reviewed items first lets a flood of 100 spam items soak up the
crowd's attention (in the issue-26 attack, 90 honest reviews met none of them). The rule:

1. Never an item of the reviewer's own voice, never one their voice has already reviewed, been
   dealt or has in flight, and an item only once per voice: each item's reviewers are spread
   over different voices. Items of fellow venue members (whose review would not count) only
   when nothing else is left, so a classroom still has something to review. Only reviews that
   count toward trust (`crowd.assess`: independent, weighing something) count below.
2. Items still short of a verdict before the others: fewer than `min_reviews` counting reviews
   given or in flight, or, once rejected by someone, fewer than 2r + 1 (r rejections) given or
   in flight. One voice's rejection never settles an item alone: a ring that rejects every
   honest item it is dealt would otherwise leave each at one honest endorsement against one
   rejection, contested, while the crowd's reviews went elsewhere.
3. Among them, the author voice that has had the least attention so far (counting reviews of
   all its items, given or in flight): every voice gets an equal share of the crowd's reviews,
   whether it wrote 3 items or 100.
4. Within a voice, the item with the most verdicts given first (closest to a verdict), then
   the one with the fewest in flight, then a random one: a voice's items are audited in random
   order until verdicts decide its standing (`crowd.trust.bad_standing`), so a ring cannot hide
   its spam behind a few good items written first.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterable

from crowd.voices import Voices

DEAL_TTL_S = 1800.0  # an unanswered deal counts as a review in flight for this long
QUEUE_MAX = 20  # open deals one reviewer may hold


def deal(
    candidates: Iterable[tuple[int, str]],
    reviewer: str,
    voices: Voices,
    reviewed: dict[int, dict[str, str | None]],
    min_reviews: int,
    limit: int,
    rng: random.Random,
    counts: Callable[[str, str], bool] | None = None,
) -> list[int]:
    """Up to `limit` item ids for `reviewer`, in the order to show them. `candidates`: (item
    id, author) of every reviewable item the reviewer's voice was not dealt yet; `reviewed`:
    item id -> pseudonym -> their verdict, or None while the item is in flight to them;
    `counts(reviewer, author)`: whether a review counts toward trust (default: independent)."""
    counts = counts or voices.independent
    mine = voices.of(reviewer)
    primary: list[tuple[int, str]] = []
    fallback: list[tuple[int, str]] = []
    for item, author in candidates:
        takers = reviewed.get(item, {})
        if voices.of(author) == mine or any(voices.of(p) == mine for p in takers):
            continue
        (primary if voices.independent(reviewer, author) else fallback).append((item, author))
    picks = _order(primary, reviewed, voices, counts, min_reviews, limit, rng)
    if len(picks) < limit:
        picks += _order(fallback, reviewed, voices, counts, min_reviews, limit - len(picks), rng)
    return picks


def _order(
    pool: list[tuple[int, str]],
    reviewed: dict[int, dict[str, str | None]],
    voices: Voices,
    counts: Callable[[str, str], bool],
    min_reviews: int,
    limit: int,
    rng: random.Random,
) -> list[int]:
    """Steps 2-4 of the rule, greedily: each pick counts as one more review in flight."""
    votes: dict[int, list[int]] = {}  # item -> [endorsements, rejections, in flight]
    attention: dict[str, int] = defaultdict(int)
    author_voice: dict[int, str] = {}
    for item, author in pool:
        counted: dict[str, str | None] = {}
        for p, verdict in reviewed.get(item, {}).items():
            if counts(p, author):
                counted.setdefault(voices.of(p), verdict)  # a voice counts once
        given = [v for v in counted.values() if v is not None]
        votes[item] = [given.count("endorse"), given.count("reject"), len(counted) - len(given)]
        author_voice[item] = voices.of(author)
        attention[author_voice[item]] += len(counted)

    def settled(item: int) -> bool:
        endorse, reject, flying = votes[item]
        if flying == 0 and endorse + reject >= min_reviews and endorse != reject:
            return True  # decided
        target = max(min_reviews, 2 * reject + 1) if reject else min_reviews
        return endorse + reject + flying >= target

    luck = {item: rng.random() for item, _ in pool}
    left = {item for item, _ in pool}
    picks: list[int] = []
    while left and len(picks) < limit:
        best = min(
            left,
            key=lambda i: (
                settled(i),
                attention[author_voice[i]],
                -(votes[i][0] + votes[i][1]),
                votes[i][2],
                luck[i],
            ),
        )
        picks.append(best)
        left.discard(best)
        votes[best][2] += 1
        attention[author_voice[best]] += 1
    return picks
