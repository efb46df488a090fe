"""The GIL's switch interval under a busy web server: what the app now sets (0.5 ms, crowd/
threads.py) against Python's default (5 ms).

    .venv/bin/python bench/gil.py [--requests 8] [--tokens 32] [--busy 4] [--repeats 3]

The generation scheduler drops the GIL in every torch operation of a forward pass (hundreds per
decoding step) and must take it back after each. While other threads run Python (the web
server's request handlers: streaming, storing, answering), each take-back can wait a whole
switch interval. On the app's load benchmark, a 19-row decoding step that takes 0.4 s took
2.3 s, and a one-row prefill 2 s, while 17 volunteers' replies ended and their submissions and
next messages arrived at once.

Arms, interleaved `--repeats` times in this one process, on the default model, 4 groups'
adapters, `--requests` concurrent greedy replies:
  default   switch interval 5 ms, `--busy` threads alternating Python work and waits
  short     switch interval 0.5 ms, the same busy threads
  quiet     5 ms, no busy threads: the ceiling
Each arm reports decode tok/s, the replies' median time to first token, and the busy threads'
Python work (loops/s: what the short interval costs them). The last line is one JSON object
with `short_over_default` decode and ttft ratios (decode above 1 and ttft below 1 mean the
short interval helps) and `busy_work_short_over_default`.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time

from serve import four_group_parser, four_groups, run_concurrent, settle  # bench/ on the path

from crowd.serving.generation import GenerationService
from crowd.threads import SWITCH_INTERVAL_S

PYTHON_DEFAULT_S = 0.005


def busy(stop: threading.Event, counts: list[int], i: int) -> None:
    """Python work in bursts of about 1 ms with 2 ms waits between, the way a request handler
    alternates between its own work and waiting for the network or the database."""
    while not stop.is_set():
        for _ in range(100):
            json.loads(json.dumps({"text": "x" * 200, "n": list(range(50))}))
        counts[i] += 1
        time.sleep(0.002)


def replies(service: GenerationService, jobs, sampling) -> tuple[float, float]:
    """(decode tok/s, median seconds to first token) of all jobs at once."""
    firsts: list[float] = []
    wall, _, tokens = run_concurrent(service, jobs, sampling, firsts)
    return tokens / wall, statistics.median(firsts)


def one_arm(arm: str, service, jobs, sampling, n_busy: int) -> tuple[float, float, float]:
    sys.setswitchinterval(SWITCH_INTERVAL_S if arm == "short" else PYTHON_DEFAULT_S)
    n = 0 if arm == "quiet" else n_busy
    stop, counts = threading.Event(), [0] * n
    workers = [threading.Thread(target=busy, args=(stop, counts, i)) for i in range(n)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    decode, ttft = replies(service, jobs, sampling)
    stop.set()
    for worker in workers:
        worker.join()
    work = sum(counts) / (time.perf_counter() - start)
    settle(service)
    return decode, ttft, work


def main(argv: list[str] | None = None) -> int:
    parser = four_group_parser(__doc__, tokens=32)
    parser.add_argument(
        "--busy", type=int, default=4, help="threads alternating Python work and waits"
    )
    args = parser.parse_args(argv)
    service, sampling, jobs = four_groups(args, "bench-gil-")
    replies(service, jobs, sampling)  # warm-up
    settle(service)
    figures: dict[str, list[tuple[float, float, float]]] = {"default": [], "short": [], "quiet": []}
    for repeat in range(args.repeats):
        for arm in figures:
            figures[arm].append(one_arm(arm, service, jobs, sampling, args.busy))
            decode, ttft, work = figures[arm][-1]
            print(
                f"repeat {repeat + 1} {arm:>7}: decode {decode:.1f} tok/s, ttft p50 "
                f"{ttft:.3f} s, busy threads {work:.0f} loops/s",
                flush=True,
            )
    service.close()
    med = {
        arm: [statistics.median(x[i] for x in runs) for i in range(3)]
        for arm, runs in figures.items()
    }
    result = {
        "decode_tok_s": {arm: round(m[0], 2) for arm, m in med.items()},
        "ttft_p50_s": {arm: round(m[1], 3) for arm, m in med.items()},
        "busy_loops_s": {arm: round(m[2]) for arm, m in med.items()},
        "short_over_default": {
            "decode": round(med["short"][0] / med["default"][0], 3),
            "ttft": round(med["short"][1] / med["default"][1], 3),
        },
        "busy_work_short_over_default": round(med["short"][2] / med["default"][2], 3),
        "busy": args.busy,
        "requests": args.requests,
        "repeats": args.repeats,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
