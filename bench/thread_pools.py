"""torch's per-thread pools on a small CPU: what the app's threads now do (a thread that ran
torch work ends with it, crowd/threads.py) against what they did (it lived on, idle).

    .venv/bin/python bench/thread_pools.py [--requests 8] [--tokens 40] [--repeats 3]

libgomp gives each thread that runs a parallel operation its own team of helper threads. While
the process holds more such threads than cores, every team waits passively, and each of
torch's many small parallel operations pays a sleep and a wake-up. In the app that happened
whenever two long-lived threads had run torch work: the round worker after its first round,
and the generation scheduler's idle thread while a round trained.

Two arms, interleaved `--repeats` times in this one process, on the default model:
  lived    another thread runs one parallel torch operation, then stays alive (idle)
  ended    the same thread ends after the operation (`run_in_own_thread`)
Each arm measures (a) `--requests` concurrent greedy replies over 4 groups' adapters through
the generation service, and (b) "round work": forward passes over a [8, 128] token batch in
a thread of their own, with the scheduler's thread idle but alive (lived) or ended (ended).
The last line is one JSON object with `decode_ended_over_lived` and `round_ended_over_lived`
(throughput ratios; above 1 means the change helps).
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time

from serve import (
    four_group_parser,
    four_groups,
    run_concurrent,
    settle,
)  # bench/ is on the path: run as a script

from crowd.serving.generation import GenerationService
from crowd.threads import run_in_own_thread


def parallel_op() -> None:
    """One operation big enough for torch to run it on every thread."""
    import torch

    a = torch.randn(1024, 1024)
    (a @ a).sum()


def round_work(loaded, passes: int = 3) -> float:
    """Forward passes per second over an [8, 128] batch, in a thread of its own."""
    import torch

    def work() -> float:
        ids = torch.randint(100, 1000, (8, 128))
        start = time.perf_counter()
        with torch.inference_mode():
            for _ in range(passes):
                loaded.model(input_ids=ids)
        return passes / (time.perf_counter() - start)

    return run_in_own_thread(work, name="round-work")


def one_arm(arm: str, service: GenerationService, jobs, sampling) -> tuple[float, float]:
    done = threading.Event()
    if arm == "lived":  # as before: a finished round's thread stays, its pool idle

        def hold() -> None:
            parallel_op()
            done.wait()

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
    else:  # now: it ends with its work
        run_in_own_thread(parallel_op, name="round-job")
    time.sleep(0.5)
    wall, _, tokens = run_concurrent(service, jobs, sampling)
    decode = tokens / wall
    if arm == "ended":  # the scheduler's idle thread ends too before the round works alone
        settle(service)
    rounds = round_work(service.loaded)
    done.set()
    if arm == "lived":
        holder.join()
    settle(service)  # each arm starts from the same state
    return decode, rounds


def main(argv: list[str] | None = None) -> int:
    import torch  # here, after crowd set its thread-pool default (crowd/__init__.py)

    args = four_group_parser(__doc__, tokens=40).parse_args(argv)
    service, sampling, jobs = four_groups(args, "bench-pools-")
    run_concurrent(service, jobs, sampling)  # warm-up
    figures: dict[str, list[tuple[float, float]]] = {"lived": [], "ended": []}
    for repeat in range(args.repeats):
        for arm in figures:
            figures[arm].append(one_arm(arm, service, jobs, sampling))
            decode, rounds = figures[arm][-1]
            print(
                f"repeat {repeat + 1} {arm:>5}: decode {decode:.1f} tok/s, round work "
                f"{rounds:.2f} passes/s",
                flush=True,
            )
    service.close()
    med = {
        arm: [statistics.median(x[i] for x in runs) for i in (0, 1)]
        for arm, runs in figures.items()
    }
    result = {
        "decode_tok_s": {arm: round(m[0], 2) for arm, m in med.items()},
        "round_passes_s": {arm: round(m[1], 3) for arm, m in med.items()},
        "decode_ended_over_lived": round(med["ended"][0] / med["lived"][0], 3),
        "round_ended_over_lived": round(med["ended"][1] / med["lived"][1], 3),
        "requests": args.requests,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
