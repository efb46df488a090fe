"""Replies while a round trains, on the default model: does lowering the round worker's CPU
priority (CROWD_WORKER_NICE) keep replies fast?

    .venv/bin/python bench/beside_training.py [--nice 10] [--repeats 3] [--replies 4]

Three arms, interleaved in one process on the same loaded model, `--repeats` times:
  idle      nobody trains;
  equal     the product's TRLTrainer trains a LoRA round in a background thread at the serving
            thread's priority (CROWD_WORKER_NICE=0, the app before this setting);
  lowered   the same training with the worker's priority lowered by `--nice`
            (crowd.threads.lower_priority, what the app's worker thread does).
In each arm one volunteer asks `--replies` questions one after another (greedy, `--tokens`
tokens, a group's adapter) and the time to the first streamed text and to the whole reply are
recorded; the training thread also reports its optimizer steps per second, so the cost to the
round is visible. Prints medians; the last line is one JSON object with the ratios
(`ttft_equal_over_idle`, `ttft_lowered_over_idle`, `training_lowered_over_equal`, ...).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from crowd.config import ModelSettings, TrainingSettings
from crowd.generation import GenerationService, Sampling
from crowd.models import convert_packaged_model, load_base
from crowd.threads import lower_priority
from crowd.training.data import SFTExample, TrainingCancelled
from crowd.training.trainer import TRLTrainer

QUESTIONS = [
    "Tell me about your day.",
    "What do you think of rainy weekends?",
    "Give me some advice about a new job.",
    "Write a reddit comment about cats.",
]
REPLY = "What a joyful thing to hear, I am so happy for you! Tell me more about it."


class Training(threading.Thread):
    """A LoRA round in the background at `nice`, cancelled by `stop()`; counts its steps."""

    def __init__(self, base: Path, nice: int, work: Path):
        super().__init__(name="round-worker", daemon=True)
        self.base, self.nice, self.work = base, nice, work
        self.steps, self.steps_at_start, self.measured_from = 0, 0, 0.0
        self._stop_event = threading.Event()
        self.running = threading.Event()

    def run(self) -> None:
        lower_priority(self.nice)  # first, as the worker does: torch's threads inherit it
        trainer = TRLTrainer(str(self.base), TrainingSettings(epochs=50), device="cpu")
        sft = [
            SFTExample(({"role": "user", "content": q}, {"role": "assistant", "content": REPLY}))
            for q in QUESTIONS * 8
        ]
        try:
            trainer.train(
                init_adapter=None,
                sft=sft,
                pairs=[],
                mode="sft",
                out_dir=self.work / f"adapter-{time.monotonic_ns()}",
                progress=self._step,
            )
        except TrainingCancelled:
            pass

    def _step(self, _progress) -> bool:
        self.steps += 1
        self.running.set()  # training has reached its steady state (model loaded, first step)
        return not self._stop_event.is_set()

    def stop(self) -> float:
        """Stop; returns optimizer steps per second while replies were measured."""
        steps, seconds = self.steps, time.perf_counter() - self.measured_from
        self._stop_event.set()
        self.join()
        return (steps - self.steps_at_start) / seconds

    def mark(self) -> None:
        self.steps_at_start, self.measured_from = self.steps, time.perf_counter()


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


def arm(service, base, nice, args, work) -> tuple[list[tuple[float, float]], float | None]:
    if nice is None:
        return replies(service, args.replies, args.sampling), None
    training = Training(base, nice, work)
    training.start()
    training.running.wait(timeout=600)
    training.mark()
    measured = replies(service, args.replies, args.sampling)
    return measured, training.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--replies", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scheduler", choices=("continuous", "static"), default="continuous")
    args = parser.parse_args(argv)
    import torch  # here, after crowd set its thread-pool default (crowd/__init__.py)

    args.sampling = Sampling(max_new_tokens=args.tokens, temperature=0.0)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serve import make_adapters

    cache = Path(__file__).resolve().parent.parent / ".venv" / "test-cache" / "models"
    base = convert_packaged_model(cache)
    work = Path(tempfile.mkdtemp(prefix="bench-beside-"))
    service = GenerationService(
        load_base(str(base), cache, device="cpu"), ModelSettings(scheduler=args.scheduler)
    )
    service.adapters.load("g0", make_adapters(base, work, 1, 16)[0])
    replies(service, 1, args.sampling)  # warm up
    arms = {"idle": None, "equal": 0, "lowered": args.nice}
    times: dict[str, list] = {name: [] for name in arms}
    steps: dict[str, list] = {"equal": [], "lowered": []}
    for repeat in range(args.repeats):
        for name, nice in arms.items():
            measured, rate = arm(service, base, nice, args, work)
            times[name] += measured
            if rate is not None:
                steps[name].append(rate)
            ttft = statistics.median(t for t, _ in measured)
            print(
                f"repeat {repeat + 1} {name:>8}: ttft {ttft:.2f} s"
                + (f", training {rate:.3f} steps/s" if rate is not None else ""),
                flush=True,
            )
    service.close()
    print(json.dumps(result(args, times, steps)))
    return 0


def result(args, times: dict[str, list], steps: dict[str, list]) -> dict:
    med = {
        name: (statistics.median(t for t, _ in ts), statistics.median(w for _, w in ts))
        for name, ts in times.items()
    }
    rate = {name: statistics.median(r) for name, r in steps.items()}
    for name, (ttft, whole) in med.items():
        print(f"{name:>8}: ttft {ttft:.3f} s, whole reply {whole:.2f} s (medians)")
    return {
        "nice": args.nice,
        "scheduler": args.scheduler,
        "threads": args.threads,
        "replies_per_arm": args.replies * args.repeats,
        **{f"ttft_{n}_s": round(v[0], 3) for n, v in med.items()},
        **{f"reply_{n}_s": round(v[1], 3) for n, v in med.items()},
        "ttft_equal_over_idle": round(med["equal"][0] / med["idle"][0], 2),
        "ttft_lowered_over_idle": round(med["lowered"][0] / med["idle"][0], 2),
        "reply_equal_over_idle": round(med["equal"][1] / med["idle"][1], 2),
        "reply_lowered_over_idle": round(med["lowered"][1] / med["idle"][1], 2),
        "training_steps_per_s_equal": round(rate["equal"], 4),
        "training_steps_per_s_lowered": round(rate["lowered"], 4),
        "training_lowered_over_equal": round(rate["lowered"] / rate["equal"], 2),
    }


if __name__ == "__main__":
    sys.exit(main())
