"""Prefix caching: a conversation's later messages with the KV cache of its earlier turns
(crowd/serving/prefix_cache.py) against without it, in one run, on the default model.

    .venv/bin/python bench/prefix.py [--conversations 8] [--turns 4] [--tokens 48] [--repeats 2]

`--conversations` volunteers each hold one conversation of `--turns` messages, all at once
(one thread each, a message as soon as the last reply ended), through the generation service
with the continuous scheduler; two services on one model copy each, one with the cache
(`CROWD_PREFIX_CACHE_TOKENS`'s default) and one with it off, interleaved `--repeats` times.
Prints time to first token and whole reply per turn; the last line is one JSON object with
`ttft_p50_s` / `ttft_p95_s` per arm over turns 2 and later, and `off_over_on_ttft_p95`
(above 1: the cache helps).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

from serve import PROMPTS, packaged_model, settle  # bench/ is on the path: run as a script

from crowd.config import ModelSettings
from crowd.models import load_base
from crowd.serving.generation import GenerationService
from crowd.serving.protocol import Sampling

FOLLOW_UPS = [
    "Can you say more about that?",
    "Why do you think so?",
    "Give me an example, please.",
    "And what would you do next?",
    "Thanks. One more thing: how would you sum it up?",
]


def conversation(service, first: str, turns: int, sampling, out: list) -> None:
    """One volunteer: `turns` messages, each after the last reply; (turn, ttft, reply s)."""
    chat = [{"role": "user", "content": first}]
    for turn in range(turns):
        start = time.perf_counter()
        stream = service.stream(chat, "__base__", sampling)
        text = next(stream)
        ttft = time.perf_counter() - start
        for text in stream:  # noqa: B007
            pass
        out.append((turn + 1, ttft, time.perf_counter() - start))
        chat = chat + [
            {"role": "assistant", "content": text.strip()},
            {"role": "user", "content": FOLLOW_UPS[turn % len(FOLLOW_UPS)]},
        ]


def crowd(service, conversations: int, turns: int, sampling) -> list:
    out: list = []
    threads = [
        threading.Thread(
            target=conversation, args=(service, PROMPTS[i % len(PROMPTS)], turns, sampling, out)
        )
        for i in range(conversations)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    base, cache = packaged_model(args.threads)
    sampling = Sampling(max_new_tokens=args.tokens, temperature=0.0)
    services = {}
    for arm, tokens in (("on", ModelSettings().prefix_cache_tokens), ("off", 0)):
        settings = ModelSettings(prefix_cache_tokens=tokens, batch_window_ms=20)
        loaded = load_base(str(base), cache, device="cpu")
        services[arm] = GenerationService(loaded, settings, idle_exit_s=0.3)
    runs: dict[str, list] = {arm: [] for arm in services}
    for repeat in range(args.repeats):
        for arm, service in services.items():
            settle(*services.values())
            found = crowd(service, args.conversations, args.turns, sampling)
            runs[arm] += found
            later = [t for turn, t, _ in found if turn > 1]
            print(
                f"repeat {repeat + 1} cache {arm:>3}: time to first token, turns 2+: "
                f"p50 {statistics.median(later):.2f} s, p95 {p95(later):.2f} s; "
                f"hits {service.prefixes.hits}",
                flush=True,
            )
    result: dict = {}
    for arm, found in runs.items():
        later = [t for turn, t, _ in found if turn > 1]
        first = [t for turn, t, _ in found if turn == 1]
        result[arm] = {
            "ttft_p50_s": round(statistics.median(later), 3),
            "ttft_p95_s": round(p95(later), 3),
            "first_turn_ttft_p50_s": round(statistics.median(first), 3),
            "reply_p50_s": round(statistics.median(r for turn, _, r in found if turn > 1), 3),
            "hits": services[arm].prefixes.hits,
            "reused_tokens": services[arm].prefixes.reused,
        }
        services[arm].close()
    result["off_over_on_ttft_p95"] = round(
        result["off"]["ttft_p95_s"] / result["on"]["ttft_p95_s"], 3
    )
    result["off_over_on_ttft_p50"] = round(
        result["off"]["ttft_p50_s"] / result["on"]["ttft_p50_s"], 3
    )
    result.update(conversations=args.conversations, turns=args.turns, repeats=args.repeats)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
