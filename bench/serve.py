"""Serving benchmark on the default model: batched multi-adapter service against one-at-a-time.

    .venv/bin/python bench/serve.py [--requests 8] [--groups 4] [--tokens 40] [--repeats 3]
                                    [--schedulers static,continuous]

Prints its figures; the last line is one JSON object: memory_ratio, then the continuous
scheduler's throughput_ratio (batched against one at a time), ttft_s, ..., each scheduler's
figures under "schedulers", and continuous_over_static_batched_tok_s. Every arm (each scheduler,
batched and one at a time) runs in this one process, interleaved, so the ratios hold even when
the machine is busy; absolute seconds do not.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from crowd.config import ModelSettings
from crowd.models import convert_packaged_model, load_base
from crowd.serving.generation import GenerationService
from crowd.serving.protocol import Sampling

PROMPTS = [
    "Tell me something nice about the sea.",
    "How do I make a cup of tea?",
    "Write one sentence about your favourite season.",
    "What should I do on a rainy afternoon?",
    "Give me a short piece of advice for an exam.",
    "Describe a cat in one sentence.",
    "Why is the sky blue?",
    "Say something encouraging to a friend.",
]


def rss_mb() -> float:
    """Current resident set size in MB (from /proc, not the peak)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def packaged_model(threads: int) -> tuple[Path, Path]:
    """torch's CPU threads set, the packaged default model's folder and the models cache."""
    import torch  # here, after crowd set its thread-pool default (crowd/__init__.py)

    torch.set_num_threads(threads)
    cache = Path(__file__).resolve().parent.parent / ".venv" / "test-cache" / "models"
    return convert_packaged_model(cache), cache


def make_adapters(base: Path, out: Path, n: int, rank: int) -> list[Path]:
    """n LoRA adapters with random weights, shaped like a trained group adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        init_lora_weights=False,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    )
    peft_model = get_peft_model(model, config)
    paths = []
    for i in range(n):
        torch.manual_seed(i)
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.data.normal_(0, 0.01)
        peft_model.save_pretrained(str(out / f"g{i}"))
        paths.append(out / f"g{i}")
    del model, peft_model
    return paths


def run_concurrent(
    service: GenerationService,
    jobs: list[tuple[str, str]],
    sampling: Sampling,
    firsts: list[float] | None = None,
):
    """All jobs at once, one thread each; returns (wall seconds, per-request latencies, tokens).
    `firsts`, when given, receives each request's seconds to its first streamed text."""
    latencies: list[float] = [0.0] * len(jobs)
    tokens: list[int] = [0] * len(jobs)
    first: list[float] = [0.0] * len(jobs)

    def one(i: int) -> None:
        start, text = time.perf_counter(), ""
        chat = [{"role": "user", "content": jobs[i][0]}]
        for text in service.stream(chat, jobs[i][1], sampling):  # noqa: B007
            first[i] = first[i] or time.perf_counter() - start
        latencies[i] = time.perf_counter() - start
        tokens[i] = len(service.loaded.tokenizer(text.strip())["input_ids"])

    start = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if firsts is not None:
        firsts[:] = first
    return time.perf_counter() - start, latencies, sum(tokens)


def four_group_parser(doc: str, tokens: int) -> argparse.ArgumentParser:
    """The options of the benchmarks that run `four_groups`: --requests, --tokens, --repeats,
    --threads."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=tokens)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    return parser


def four_groups(args, prefix: str) -> tuple[GenerationService, Sampling, list[tuple[str, str]]]:
    """A generation service on the packaged model with 4 groups' random adapters (g0-g3), for
    `args.requests` rows at a time, greedy `args.tokens`-token sampling, and the jobs: one
    prompt per request, the groups in turn. Its idle thread ends after 0.3 s (2 s in the app),
    to keep benchmarks that wait for it short."""
    base, cache = packaged_model(args.threads)
    paths = make_adapters(base, Path(tempfile.mkdtemp(prefix=prefix)), 4, 16)
    loaded = load_base(str(base), cache, device="cpu")
    settings = ModelSettings(max_batch=args.requests, batch_window_ms=20)
    service = GenerationService(loaded, settings, idle_exit_s=0.3)
    for i in range(4):
        service.adapters.load(f"g{i}", paths[i])
    jobs = [(PROMPTS[i % len(PROMPTS)], f"g{i % 4}") for i in range(args.requests)]
    return service, Sampling(max_new_tokens=args.tokens, temperature=0.0), jobs


def settle(*services: GenerationService) -> None:
    """Wait until every service's scheduler thread has ended: an idle thread that lives keeps
    its torch thread pool, which would slow the next arm (crowd/threads.py)."""
    while any(service.running for service in services):
        time.sleep(0.05)


def run_sequential(service: GenerationService, jobs: list[tuple[str, str]], sampling: Sampling):
    latencies, tokens = [], 0
    start = time.perf_counter()
    for prompt, adapter in jobs:
        t0 = time.perf_counter()
        text = service.reply([{"role": "user", "content": prompt}], adapter, sampling)
        latencies.append(time.perf_counter() - t0)
        tokens += len(service.loaded.tokenizer(text)["input_ids"])
    return time.perf_counter() - start, latencies, tokens


def time_to_first_token(service: GenerationService, adapter: str, sampling: Sampling, n: int = 5):
    times = []
    for prompt in PROMPTS[:n]:
        start = time.perf_counter()
        stream = service.stream([{"role": "user", "content": prompt}], adapter, sampling)
        next(stream)
        times.append(time.perf_counter() - start)
        for _ in stream:
            pass
    return statistics.median(times)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument(
        "--adapters", type=int, default=8, help="adapters loaded for the memory figure"
    )
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument(
        "--schedulers",
        default="static,continuous",
        help="CROWD_SCHEDULER values to compare, interleaved in this one run",
    )
    args = parser.parse_args(argv)
    args.schedulers = [s.strip() for s in args.schedulers.split(",") if s.strip()]
    if not args.schedulers or not set(args.schedulers) <= {"static", "continuous"}:
        parser.error("--schedulers takes static and/or continuous")
    return args


def memory(service: GenerationService, paths: list[Path], n: int, sampling: Sampling) -> dict:
    """RSS after a generation with one adapter loaded, then with `n`."""
    service.adapters.load("g0", paths[0])
    service.reply([{"role": "user", "content": PROMPTS[0]}], "g0", sampling)
    rss_one = rss_mb()
    for i in range(1, n):
        service.adapters.load(f"g{i}", paths[i])
    run_concurrent(service, [(PROMPTS[i % 8], f"g{i}") for i in range(n)], sampling)
    rss_all = rss_mb()
    print(
        f"memory: {rss_one:.0f} MB with 1 adapter, {rss_all:.0f} MB with {n} "
        f"-> ratio {rss_all / rss_one:.3f}"
    )
    return {
        "memory_ratio": round(rss_all / rss_one, 4),
        "rss_one_adapter_mb": round(rss_one, 1),
        "rss_all_adapters_mb": round(rss_all, 1),
        "adapters": n,
    }


def figures(name: str, service, batched: list, single: list, ttft: float) -> dict:
    tput_b = statistics.median(tok / wall for wall, _, tok in batched)
    tput_s = statistics.median(tok / wall for wall, _, tok in single)
    lat_b = statistics.median(x for _, lats, _ in batched for x in lats)
    lat_s = statistics.median(x for _, lats, _ in single for x in lats)
    print(
        f"{name:>10}: batched {tput_b:.1f} tok/s, one-at-a-time {tput_s:.1f} tok/s "
        f"-> ratio {tput_b / tput_s:.2f}; median latency batched {lat_b:.2f} s, "
        f"one-at-a-time {lat_s:.2f} s; time to first token {ttft:.3f} s"
    )
    return {
        "throughput_ratio": round(tput_b / tput_s, 3),
        "batched_tok_s": round(tput_b, 2),
        "sequential_tok_s": round(tput_s, 2),
        "median_latency_batched_s": round(lat_b, 3),
        "median_latency_sequential_s": round(lat_s, 3),
        "ttft_s": round(ttft, 4),
    }


def main(argv: list[str] | None = None) -> int:
    import torch  # here, after crowd set its thread-pool default (crowd/__init__.py)

    args = parse(argv)
    base, cache = packaged_model(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    paths = make_adapters(base, tmp, max(args.adapters, args.groups), args.rank)
    # Greedy decoding with a fixed budget: every arm produces exactly the same tokens.
    sampling = Sampling(max_new_tokens=args.tokens, temperature=0.0)
    services: dict[str, GenerationService] = {}
    result: dict[str, Any] = {}
    for name in args.schedulers:  # one model copy per scheduler; memory measured on the first
        loaded = load_base(str(base), cache, device=args.device)
        settings = ModelSettings(max_batch=args.requests, batch_window_ms=20, scheduler=name)
        # Each scheduler's thread ends 0.3 s after its last reply (2 s in the app), so that the
        # arms do not slow each other through idle thread pools.
        services[name] = service = GenerationService(loaded, settings, idle_exit_s=0.3)
        if not result:
            result.update(memory(service, paths, args.adapters, sampling))
        for i in range(args.groups):
            service.adapters.load(f"g{i}", paths[i])
    # Throughput: the same requests over `groups` adapters, batched vs one at a time, the
    # schedulers interleaved so that a busy machine slows every arm alike.
    jobs = [(PROMPTS[i % len(PROMPTS)], f"g{i % args.groups}") for i in range(args.requests)]
    runs: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in services}
    for _ in range(args.repeats):
        for name, service in services.items():
            settle(*services.values())
            runs[name][0].append(run_concurrent(service, jobs, sampling))
            runs[name][1].append(run_sequential(service, jobs, sampling))
    by_scheduler = {}
    for name, service in services.items():
        settle(*services.values())
        ttft = time_to_first_token(service, "g1", sampling)
        by_scheduler[name] = figures(name, service, *runs[name], ttft)
        service.close()
    main_name = "continuous" if "continuous" in by_scheduler else args.schedulers[0]
    result.update(by_scheduler[main_name], scheduler=main_name, schedulers=by_scheduler)
    if len(by_scheduler) == 2:
        c, s = by_scheduler["continuous"], by_scheduler["static"]
        result["continuous_over_static_batched_tok_s"] = round(
            c["batched_tok_s"] / s["batched_tok_s"], 3
        )
        result["continuous_over_static_ttft"] = round(c["ttft_s"] / s["ttft_s"], 3)
    result.update(
        requests=args.requests,
        groups=args.groups,
        threads=torch.get_num_threads(),
        device=loaded.device,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
