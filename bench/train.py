"""TRLTrainer against the plain PyTorch loop, same examples, same steps, interleaved.

    .venv/bin/python bench/train.py [--steps 16] [--repeats 3] [--mode sft|dpo] [--ablate]

Loads the real default model (SmolLM2-135M-Instruct, converted once under .venv/test-cache) into
both trainers, runs one short warm-up each, then alternates the two trainers `repeats` times
(the order flips every repeat, so load from other processes falls on both alike). Prints each
run, then as its last line one JSON object: trl_s_per_step, loop_s_per_step and trl_over_loop
are CPU seconds of this process per optimizer step over whole train() calls (set-up,
tokenization and saving included); on a shared machine CPU time is far less disturbed by other
processes than wall time, which is also given (wall_*: totals, the median ratio of paired runs,
and the ratio of median steady-state steps). Absolute seconds depend on the load; the ratios
are the result. Torch runs on one thread unless --threads says otherwise: with more, waiting
threads spin on a busy machine and inflate CPU time. --ablate first prints what one training
step costs with each TRL default that TRLTrainer turns off put back.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from crowd.config import TrainingSettings  # noqa: E402
from crowd.training.base import Progress  # noqa: E402
from crowd.training.data import PairExample, SFTExample  # noqa: E402
from crowd.training.loop import TorchLoopTrainer  # noqa: E402
from crowd.training.trainer import Trainer, TRLTrainer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOEMOTIONS = Path("/work/shared/data/goemotions/goemotions_neighborhoods.jsonl")
PROMPT = "write a reddit comment."


def goemotions_examples(
    n: int = 30, target: str = "love"
) -> tuple[list[SFTExample], list[PairExample]]:
    """The paper's emotion task: `n` comments near `target` as SFT examples, and pairs whose
    rejected reply is a comment near another emotion."""
    rows = [json.loads(line) for line in GOEMOTIONS.read_text().splitlines() if line.strip()]
    near = [r["text"] for r in rows if r["target"] == target][:n]
    far = [r["text"] for r in rows if r["target"] == "anger"][:n]
    user = {"role": "user", "content": PROMPT}
    sft = [SFTExample((user, {"role": "assistant", "content": text})) for text in near]
    pairs = [PairExample([user], good, bad) for good, bad in zip(near, far, strict=False)]
    return sft, pairs


def _repeat_to(items: Sequence, count: int) -> list:
    """`items` cycled to exactly `count` entries: one epoch of them is `count / batch` steps."""
    return [items[i % len(items)] for i in range(count)]


def _timed_run(
    trainer: Trainer,
    mode: str,
    sft: Sequence[SFTExample],
    pairs: Sequence[PairExample],
    work: Path,
    name: str,
) -> dict:
    """One train() call: its wall and CPU seconds (all threads of this process), and the wall
    time between consecutive progress reports (steady-state steps)."""
    marks: list[float] = []

    def progress(p: Progress) -> bool:
        marks.append(time.monotonic())
        return True

    wall, cpu = time.monotonic(), time.process_time()
    result = trainer.train(
        init_adapter=None, sft=sft, pairs=pairs, mode=mode, out_dir=work / name, progress=progress
    )
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    gaps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    loss = result.final_loss
    return {"wall": wall, "cpu": cpu, "steps": result.steps, "gaps": gaps, "loss": loss}


def compare(
    base_path: str,
    examples: Sequence[SFTExample] | Sequence[PairExample],
    steps: int,
    *,
    mode: str = "sft",
    repeats: int = 3,
    settings: TrainingSettings | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Seconds per optimizer step of TRLTrainer and TorchLoopTrainer on the same `steps` steps
    over `examples` (SFT examples for mode 'sft', pairs for 'dpo'), interleaved `repeats` times.

    Returns trl_s_per_step, loop_s_per_step (CPU seconds per step, whole train() calls
    included) and trl_over_loop, plus wall-clock figures (see `_summary`).
    """
    settings = settings or TrainingSettings(epochs=1)
    settings = TrainingSettings(**{**settings.__dict__, "epochs": 1})
    data = _repeat_to(list(examples), steps * settings.batch_size)
    sft, pairs = (data, []) if mode == "sft" else ([], data)
    warm_sft, warm_pairs = sft[: settings.batch_size], pairs[: settings.batch_size]
    trainers: dict[str, Trainer] = {
        "trl": TRLTrainer(base_path, settings, device="cpu"),
        "loop": TorchLoopTrainer(base_path, settings, device="cpu"),
    }
    runs: dict[str, list[dict]] = {name: [] for name in trainers}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        for name, trainer in trainers.items():  # first calls pay one-off costs: not counted
            _timed_run(trainer, mode, warm_sft, warm_pairs, work, f"warm-{name}")
        for repeat in range(repeats):
            order = list(trainers) if repeat % 2 == 0 else list(reversed(trainers))
            for name in order:
                run = _timed_run(trainers[name], mode, sft, pairs, work, f"{name}-{repeat}")
                runs[name].append(run)
                wall, cpu = run["wall"] / run["steps"], run["cpu"] / run["steps"]
                log(
                    f"repeat {repeat} {name:17s}: {run['steps']} steps, per step {wall:.2f} s wall,"
                    f" {cpu:.2f} s CPU; final loss {run['loss']:.4f}"
                )
    return _summary(runs)


def _summary(runs: dict[str, list[dict]]) -> dict:
    """Headline: CPU seconds per step (what the process itself spent, least disturbed by other
    processes on a shared machine). Wall-clock figures: paired runs' ratios, median."""
    steps = {name: sum(r["steps"] for r in rs) for name, rs in runs.items()}
    cpu = {name: sum(r["cpu"] for r in rs) / steps[name] for name, rs in runs.items()}
    wall = {name: sum(r["wall"] for r in rs) / steps[name] for name, rs in runs.items()}
    pairs = list(zip(runs["trl"], runs["loop"], strict=True))
    paired = [t["wall"] / b["wall"] for t, b in pairs]
    paired_cpu = [t["cpu"] / b["cpu"] for t, b in pairs]
    step = {name: statistics.median(g for r in rs for g in r["gaps"]) for name, rs in runs.items()}
    return {
        "trl_s_per_step": round(cpu["trl"], 3),
        "loop_s_per_step": round(cpu["loop"], 3),
        "trl_over_loop": round(cpu["trl"] / cpu["loop"], 3),
        "cpu_paired_ratios": [round(r, 3) for r in paired_cpu],
        "wall_trl_s_per_step": round(wall["trl"], 3),
        "wall_loop_s_per_step": round(wall["loop"], 3),
        "wall_paired_ratio_median": round(statistics.median(paired), 3),
        "wall_step_median_ratio": round(step["trl"] / step["loop"], 3),
    }


ABLATIONS = {  # name: (LM head, gradient checkpointing, bf16 autocast)
    "ours (plain head)": ("plain", False, False),
    "plain head, logits at every position": ("plain-every", False, False),
    "TRL chunked head + metrics": ("chunked+metrics", False, False),
    "TRL chunked head": ("chunked", False, False),
    "gradient checkpointing": ("plain", True, False),
    "bf16 autocast (TRL's default; off on the CPU)": ("plain", False, True),
}


def ablate(base_path: str, examples: Sequence[SFTExample], rounds: int = 5) -> dict[str, float]:
    """CPU seconds of one forward+backward step (batch of 4) with each of the TRL defaults that
    TRLTrainer turns off put back, relative to ours; variants alternate, medians over `rounds`."""
    import torch
    from trl.trainer.utils import add_fused_lm_head

    from crowd.training.data import collate_sft, encode_sft, sft_rows
    from crowd.training.lm_head import plain_lm_head

    host = TRLTrainer(base_path, TrainingSettings(), device="cpu")
    model, base = host.attach(None), host.base
    items = encode_sft(host.tokenizer, sft_rows(examples[:4]), host.settings.max_length)
    batch = collate_sft(items, host.tokenizer.pad_token_id)
    seconds: dict[str, list[float]] = {name: [] for name in ABLATIONS}
    model.train()
    for _ in range(rounds):
        for name, (head, checkpointing, bf16) in ABLATIONS.items():
            base.__dict__.pop("forward", None)
            if head.startswith("plain"):
                plain_lm_head(base, reply_only=head == "plain")
            else:  # what SFTTrainer patches in, with or without its metric outputs
                extra = ("entropy", "is_top1") if head == "chunked+metrics" else ()
                add_fused_lm_head(base, outputs=("log_probs", *extra))
            if checkpointing:
                base.gradient_checkpointing_enable()
                model.enable_input_require_grads()
            started = time.process_time()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(**batch, use_cache=False, fused_lm_head=True)
                loss = -out.log_probs.sum() / out.label_mask.sum()
            loss.backward()
            seconds[name].append(time.process_time() - started)
            model.zero_grad()
            if checkpointing:
                base.gradient_checkpointing_disable()
                model.disable_input_require_grads()
    host.detach(model)
    ours = statistics.median(seconds["ours (plain head)"])
    return {name: round(statistics.median(s) / ours, 3) for name, s in seconds.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16, help="optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per trainer, interleaved")
    parser.add_argument("--examples", type=int, default=30)
    parser.add_argument("--mode", choices=("sft", "dpo"), default="sft")
    parser.add_argument(
        "--ablate", action="store_true", help="first, the per-step cost of TRL's defaults"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: with more, threads spin while waiting for a busy "
        "core, which inflates CPU time on a shared machine; 0 = torch's default)",
    )
    args = parser.parse_args(argv)

    import torch

    from crowd.models import convert_packaged_model

    if args.threads:
        torch.set_num_threads(args.threads)
    base = convert_packaged_model(ROOT / ".venv" / "test-cache" / "models")
    sft, pairs = goemotions_examples(args.examples)
    examples = sft if args.mode == "sft" else pairs
    print(f"{args.mode}: {len(examples)} examples, {args.steps} steps x batch 4, on {base.name}")
    if args.ablate:
        for name, ratio in ablate(str(base), sft).items():
            print(f"step with {name:28s}: x{ratio:.3f}")
    result = compare(str(base), examples, args.steps, mode=args.mode, repeats=args.repeats)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
