"""Replies on a shared CPU: libgomp's default thread waiting against what importing `crowd` sets
(GOMP_SPINCOUNT=10000, crowd/__init__.py), with and without another process keeping one core busy.

    .venv/bin/python bench/shared_cpu.py [--replies 4] [--tokens 40] [--repeats 1]

Four arms, each a fresh process on the default model (the generation service, greedy, the
base model), one volunteer asking `--replies` questions one after another:
  default / crowd     torch loaded before `crowd` with nothing set (libgomp spins its idle
                      threads 300000 times), or loaded after `crowd` (a 10000 spin);
  alone / busy        nothing else started by the benchmark, or a pure-Python loop in another
                      process keeping one core busy (a stand-in for any neighbour: a second
                      app, a test run, a Space's co-tenant).
The arms are interleaved `--repeats` times. Prints median time to first text and whole reply
per arm; the last line is one JSON object with `busy_default_over_crowd` (whole reply) and
`alone_crowd_over_default` (what the short spin costs on an otherwise idle CPU).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ["Tell me about your day.", "What do you think of rainy weekends?"]


def child(policy: str, replies: int, tokens: int, threads: int) -> None:
    """One arm: load the model, warm up, time the replies, print them as JSON."""
    os.environ.pop("OMP_WAIT_POLICY", None)
    os.environ.pop("GOMP_SPINCOUNT", None)
    # libgomp reads its environment when torch loads: torch first leaves it unset (libgomp's
    # default); crowd first sets its short spin, as in the app.
    importlib.import_module("torch" if policy == "default" else "crowd")
    import torch

    from crowd.config import ModelSettings
    from crowd.models import convert_packaged_model, load_base
    from crowd.serving.generation import GenerationService
    from crowd.serving.protocol import Sampling

    torch.set_num_threads(threads)
    cache = ROOT / ".venv" / "test-cache" / "models"
    base = convert_packaged_model(cache)
    service = GenerationService(load_base(str(base), cache, device="cpu"), ModelSettings())
    sampling = Sampling(max_new_tokens=tokens, temperature=0.0)
    service.reply([{"role": "user", "content": "Hello!"}], sampling=sampling)  # warm up
    times = []
    for i in range(replies):
        start = time.perf_counter()
        stream = service.stream([{"role": "user", "content": QUESTIONS[i % 2]}], sampling=sampling)
        next(stream)
        first = time.perf_counter() - start
        for _ in stream:
            pass
        times.append([first, time.perf_counter() - start])
    service.close()
    print(json.dumps({"times": times, "spin": os.environ.get("GOMP_SPINCOUNT", "unset")}))


def arm(policy: str, busy: bool, args) -> list[list[float]]:
    hog = None
    if busy:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                policy,
                "--replies",
                str(args.replies),
                "--tokens",
                str(args.tokens),
                "--threads",
                str(args.threads),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return json.loads(out.strip().splitlines()[-1])["times"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", choices=("default", "crowd"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.replies, args.tokens, args.threads)
        return 0
    arms = [(load, policy) for load in ("alone", "busy") for policy in ("default", "crowd")]
    times: dict[str, list] = {f"{load}_{policy}": [] for load, policy in arms}
    for repeat in range(args.repeats):
        for load, policy in arms:
            measured = arm(policy, load == "busy", args)
            times[f"{load}_{policy}"] += measured
            print(
                f"repeat {repeat + 1} {load:>5} {policy:>7}: whole reply "
                f"{statistics.median(w for _, w in measured):.2f} s",
                flush=True,
            )
    med = {
        name: [statistics.median(x[k] for x in ts) for k in (0, 1)] for name, ts in times.items()
    }
    for name, (ttft, whole) in med.items():
        print(f"{name:>15}: time to first text {ttft:.3f} s, whole reply {whole:.2f} s (medians)")
    result = {
        "replies_per_arm": args.replies * args.repeats,
        "tokens": args.tokens,
        "threads": args.threads,
        **{f"{name}_ttft_s": round(v[0], 3) for name, v in med.items()},
        **{f"{name}_reply_s": round(v[1], 3) for name, v in med.items()},
        "busy_default_over_crowd": round(med["busy_default"][1] / med["busy_crowd"][1], 2),
        "alone_crowd_over_default": round(med["alone_crowd"][1] / med["alone_default"][1], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
