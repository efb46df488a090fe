"""Replies while a round trains, on the default model: the round in a thread of the app (runner
`thread`) against the round in a child process (runner `process`), against nobody training.

    .venv/bin/python bench/beside_training.py [--nice 10] [--repeats 3] [--replies 6]

Four arms, interleaved in one process on the same loaded model, `--repeats` times:
  idle      nobody trains;
  thread    a round job (crowd.rounds.job: TRL training of three groups' LoRA candidates, from a
            bundle) in a thread of this process, started from a thread at `--nice` as the worker
            does (CROWD_ROUND_RUNNER=thread);
  process   the same bundle's job as `python -m crowd round-job` in a child process forked from
            a thread at `--nice`, in Linux's idle scheduling class (CROWD_ROUND_RUNNER=process,
            the default CROWD_JOB_IDLE_CLASS=1);
  process-nice  the same child at `--nice` only (CROWD_JOB_IDLE_CLASS=0).
In each arm one volunteer asks `--replies` questions one after another (greedy, `--tokens`
tokens, a group's adapter) once the round is training, and the time to the first streamed text
and to the whole reply are recorded; the job's optimizer steps per second are read from its
progress file. Prints p50 and p95 of each, the ratios to idle and the load average; the last line
is one JSON object (`ttft_p95_thread_over_idle`, `ttft_p95_process_over_idle`, ...).
Results: docs/results/serving.md, "The round as a job".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from crowd.config import ModelSettings, TrainingSettings
from crowd.models import convert_packaged_model, load_base
from crowd.rounds.bundle import Bundle, Candidate, Example, JudgingSettings, write_bundle
from crowd.rounds.job import build_kit
from crowd.rounds.runners import ProcessRunner, ThreadRunner, read_progress
from crowd.serving.generation import GenerationService
from crowd.serving.protocol import Sampling
from crowd.threads import lower_priority
from crowd.training.data import PairExample

QUESTIONS = [
    "Tell me about your day.",
    "What do you think of rainy weekends?",
    "Give me some advice about a new job.",
    "Write a reddit comment about cats.",
]
REPLY = "What a joyful thing to hear, I am so happy for you! Tell me more about it."


def round_bundle(base: Path, parent: Path) -> Bundle:
    """A round of three groups, each 32 examples, trained for many epochs: it trains for the
    whole of an arm (the arm cancels it)."""
    examples = [
        Example(
            i,
            [{"role": "user", "content": q}, {"role": "assistant", "content": REPLY}],
            PairExample([{"role": "user", "content": q}], REPLY, "No."),
        )
        for i, q in enumerate(QUESTIONS * 8)
    ]
    bundle = Bundle(
        campaign={"id": 1, "name": "bench", "database_id": None},
        round={"id": 1, "number": 1},
        base_model=str(base),
        task="preference",
        target_emotion=None,
        mode="sft",
        seed=0,
        training=TrainingSettings(epochs=50),
        judging=JudgingSettings(),
        champion_version=1,
        groups={g: examples for g in range(3)},
        candidates=[Candidate(f"g{g}", "group", g, (g,)) for g in range(3)],
        sat_out={},
        pairs=[e.pair for e in examples[:4] if e.pair is not None],
    )
    return write_bundle(bundle, parent, None)


class Round:
    """A round job in the background through `runner`, started (and cancelled) from a thread
    at `nice`, as the worker's job thread does."""

    def __init__(self, runner, bundle: Bundle, out: Path, nice: int):
        self.runner, self.bundle, self.out, self.nice = runner, bundle, out, nice
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._drive, name="round-job", daemon=True)

    def _drive(self) -> None:
        lower_priority(self.nice)
        handle = self.runner.start(self.bundle, self.out, None)
        self.stop_event.wait()
        self.runner.cancel(handle)

    def start_and_wait_for_training(self, timeout: float = 900) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while read_progress(self.out).get("step", 0) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the round in {self.out} did not start training")
            time.sleep(0.2)

    def steps(self) -> tuple[int, int, float]:
        """(candidates done, optimizer steps done on the current one, now)."""
        p = read_progress(self.out)
        return p.get("groups_done", 0), p.get("step", 0), time.monotonic()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join()


def replies(service: GenerationService, n: int, sampling: Sampling) -> list[tuple[float, float]]:
    """(time to first text, whole reply) for n questions, one after another."""
    times = []
    for i in range(n):
        start = time.perf_counter()
        stream = service.stream([{"role": "user", "content": QUESTIONS[i % 4]}], "g0", sampling)
        next(stream)
        first = time.perf_counter() - start
        for _ in stream:
            pass
        times.append((first, time.perf_counter() - start))
    return times


def arm(name: str, service, runners: dict, bundle: Bundle, args, work: Path):
    """(replies measured, training steps per second or None) of one arm."""
    if name == "idle":
        return replies(service, args.replies, args.sampling), None
    out = work / f"{name}-{time.monotonic_ns()}"
    job = Round(runners[name], bundle, out, args.nice)
    job.start_and_wait_for_training()
    group0, steps0, t0 = job.steps()
    measured = replies(service, args.replies, args.sampling)
    group1, steps1, t1 = job.steps()
    job.stop()
    return measured, (steps1 - steps0) / (t1 - t0) if group0 == group1 else None


def p95(values: list[float]) -> float:
    return (
        statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--replies", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import torch  # here, after crowd set its thread-pool default (crowd/__init__.py)

    args.sampling = Sampling(max_new_tokens=args.tokens, temperature=0.0)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serve import make_adapters

    cache = Path(__file__).resolve().parent.parent / ".venv" / "test-cache" / "models"
    base = convert_packaged_model(cache)
    work = Path(tempfile.mkdtemp(prefix="bench-beside-"))
    # No prefix cache: the same four questions come back in every arm, and a cached prompt's
    # first token would time the cache, not the prefill beside a round.
    service = GenerationService(
        load_base(str(base), cache, device="cpu"), ModelSettings(prefix_cache_tokens=0)
    )
    service.adapters.load("g0", make_adapters(base, work, 1, 16)[0])
    replies(service, 1, args.sampling)  # warm up
    bundle = round_bundle(base, work / "bundles")
    # the thread runner's models, loaded once as the app's
    kit = build_kit(bundle.base_model, bundle.training, cache, "cpu", bundle.judging)
    env = {
        "CROWD_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "CROWD_MODELS_DIR": str(cache),
    }
    runners = {
        "thread": ThreadRunner(lambda _b: kit),
        "process": ProcessRunner(env),
        "process-nice": ProcessRunner(env, idle_class=False),
    }
    times: dict[str, list] = {"idle": [], **{name: [] for name in runners}}
    rates: dict[str, list] = {name: [] for name in runners}
    for repeat in range(args.repeats):
        for name in times:
            measured, rate = arm(name, service, runners, bundle, args, work)
            times[name] += measured
            if rate is not None:
                rates[name].append(rate)
            ttft = statistics.median(t for t, _ in measured)
            print(f"repeat {repeat + 1} {name:>12}: ttft p50 {ttft:.2f} s"
                  + (f", training {rate:.3f} steps/s" if rate is not None else ""), flush=True)  # fmt: skip
    service.close()
    print(json.dumps(result(args, times, rates)))
    return 0


def result(args, times: dict[str, list], rates: dict[str, list]) -> dict:
    stats = {}
    for name, ts in times.items():
        first, whole = [t for t, _ in ts], [w for _, w in ts]
        stats[name] = (statistics.median(first), p95(first), statistics.median(whole), p95(whole))
        print(
            f"{name:>12}: ttft p50 {stats[name][0]:.3f} s, p95 {stats[name][1]:.3f} s; whole reply "
            f"p50 {stats[name][2]:.2f} s, p95 {stats[name][3]:.2f} s ({len(ts)} replies)"
        )
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    idle = stats["idle"]
    out = {
        "nice": args.nice,
        "threads": args.threads,
        "replies_per_arm": args.replies * args.repeats,
        "load_average_1m": round(load[0], 2),
    }
    for name in ("thread", "process", "process-nice"):
        s = stats[name]
        out[f"ttft_p50_{name}_over_idle"] = round(s[0] / idle[0], 2)
        out[f"ttft_p95_{name}_over_idle"] = round(s[1] / idle[1], 2)
        out[f"reply_p50_{name}_over_idle"] = round(s[2] / idle[2], 2)
        out[f"reply_p95_{name}_over_idle"] = round(s[3] / idle[3], 2)
        out[f"training_steps_per_s_{name}"] = (
            round(statistics.median(rates[name]), 4) if rates[name] else None
        )
    for name, s in stats.items():
        out.update({f"ttft_p50_{name}_s": round(s[0], 3), f"ttft_p95_{name}_s": round(s[1], 3)})
        out.update({f"reply_p50_{name}_s": round(s[2], 3), f"reply_p95_{name}_s": round(s[3], 3)})
    return out


if __name__ == "__main__":
    sys.exit(main())
