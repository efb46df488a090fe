"""After a crowning: each volunteer's own prompts of the round (up to three), answered by the
champion the round started with and by the one it crowned, generated once and stored, so that
an open page shows "what the model said to you before, and what it says now" without running
the model per view. For the emotion task, each reply's distance to the round's target."""

from __future__ import annotations

import numpy as np

from crowd.evaluation import Evaluator
from crowd.generation import Sampling, generate_texts
from crowd.replies import end_cleanly
from storage import before_after as store
from storage.db import connect

PER_PERSON = 3  # prompts per volunteer
MAX_PEOPLE = 64  # a large crowd: the most recent this many (bounds the worker's extra time)
SAMPLING = Sampling(max_new_tokens=64, temperature=0.0)  # greedy: one reply per prompt, stable


def make_before_after(
    evaluator: Evaluator,
    db_path,
    round_id: int,
    before: str,
    after: str,
    target: np.ndarray | None,
    now: str,
) -> int:
    """Generate and store the before/after replies of round `round_id` with the adapters named
    `before` and `after` (loaded in `evaluator`); `target`: the emotion target, or None.
    Does nothing when the round already has them (a restarted worker). Returns rows stored."""
    with connect(db_path) as db:
        if store.has_before_after(db, round_id):
            return 0
        prompts = store.prompts_of_round(db, round_id, PER_PERSON)
    people = list(prompts)[-MAX_PEOPLE:]
    items = [(person, text) for person in people for text in prompts[person]]
    if not items:
        return 0
    old = _replies(evaluator, [text for _, text in items], before)
    new = _replies(evaluator, [text for _, text in items], after)
    far_old, far_new = _distances(evaluator, old, target), _distances(evaluator, new, target)
    rows = [
        {
            "round_id": round_id,
            "participant_id": person,
            "prompt": text,
            "before": b,
            "after": a,
            "before_distance": db_,
            "after_distance": da,
        }
        for (person, text), b, a, db_, da in zip(items, old, new, far_old, far_new)
    ]
    with connect(db_path) as db, db.atomic():
        store.add_before_after(db, rows, now)
    return len(rows)


def _replies(evaluator: Evaluator, prompts: list[str], adapter: str) -> list[str]:
    """Greedy replies in batches, each ending cleanly when it ran into the token cap."""
    tokenizer, cap = evaluator.loaded.tokenizer, SAMPLING.max_new_tokens
    out: list[str] = []
    for start in range(0, len(prompts), evaluator.batch_size):
        chats = [
            [{"role": "user", "content": p}] for p in prompts[start : start + evaluator.batch_size]
        ]
        out += generate_texts(evaluator.loaded, chats, [adapter] * len(chats), SAMPLING)
    return [
        end_cleanly(r, cut=len(tokenizer.encode(r, add_special_tokens=False)) >= cap - 1)
        or "(an empty reply)"
        for r in out
    ]


def _distances(evaluator: Evaluator, texts: list[str], target: np.ndarray | None) -> list:
    """Each text's Euclidean distance to the emotion target (as the round was judged), or
    None per text for the preference task."""
    if target is None or evaluator.scorer is None:
        return [None] * len(texts)
    vectors = evaluator.scorer.score(texts)
    return [round(float(d), 4) for d in np.linalg.norm(vectors - target[None, :], axis=1)]
