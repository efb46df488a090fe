"""After a crowning: each volunteer's own prompts of the round (up to three, chosen when the
round's bundle is written: crowd.rounds.record), answered by the champion the round started with
and by the one it crowned, generated once by the round job and stored with the crowning, so that
an open page shows "what the model said to you before, and what it says now" without running
the model per view. For the emotion task, each reply's distance to the round's target."""

from __future__ import annotations

from crowd.evaluation import EvalSet, Evaluator
from crowd.serving.protocol import Sampling
from crowd.serving.static import generate_texts
from crowd.serving.trimming import end_cleanly

SAMPLING = Sampling(max_new_tokens=64, temperature=0.0)  # greedy: one reply per prompt, stable


def before_after_rows(
    evaluator: Evaluator,
    items: list[dict],
    before: str,
    after: str,
    eval_set: EvalSet,
) -> list[dict]:
    """Each item ({participant_id, prompt}: volunteers' own prompts, chosen when the round's
    bundle was written) answered by the adapters named `before` and `after` (loaded in
    `evaluator`), with each reply's distance to the round's emotion target (`eval_set`, the
    one the round was judged on; None per reply for the preference task).
    The round job makes them; the worker stores them with the crowning."""
    if not items:
        return []
    prompts = [item["prompt"] for item in items]
    old, new = _replies(evaluator, prompts, before), _replies(evaluator, prompts, after)
    far_old, far_new = _distances(eval_set, old), _distances(eval_set, new)
    return [
        {
            "participant_id": item["participant_id"],
            "prompt": item["prompt"],
            "before": b,
            "after": a,
            "before_distance": db_,
            "after_distance": da,
        }
        for item, b, a, db_, da in zip(items, old, new, far_old, far_new)
    ]


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


def _distances(eval_set: EvalSet, texts: list[str]) -> list:
    """Each text's Euclidean distance to the emotion target (as the round was judged), or
    None per text for the preference task."""
    if eval_set.task != "emotion":
        return [None] * len(texts)
    return [round(float(d), 4) for d in eval_set.distances(texts)]
