"""TRLTrainer against the plain PyTorch loop, same examples, same steps, interleaved.

    .venv/bin/python bench/train.py [--steps 16] [--repeats 2] [--mode sft|dpo]

Loads the real default model (SmolLM2-135M-Instruct, converted once under .venv/test-cache) into
both trainers, runs one short warm-up each, then alternates the two trainers `repeats` times
(the order flips every repeat, so load from other processes falls on both alike). Prints each
run, then as its last line one JSON object: trl_s_per_step, loop_s_per_step and trl_over_loop
are CPU seconds of this process per optimizer step over whole train() calls (set-up,
tokenization and saving included); on a shared machine CPU time is far less disturbed by other
processes than wall time, which is also given (wall_*: totals, the median ratio of paired runs,
and the ratio of median steady-state steps). Absolute seconds depend on the load; the ratios
are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from crowd.config import TrainingSettings  # noqa: E402
from crowd.training import PairExample, Progress, SFTExample, TRLTrainer  # noqa: E402
from crowd.training_loop import TorchLoopTrainer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOEMOTIONS = Path("/work/shared/data/goemotions/goemotions_neighborhoods.jsonl")
PROMPT = "write a reddit comment."


class TRLDefault(TRLTrainer):
    """TRLTrainer with some of what it turns off in TRL put back, to measure what each costs.
    Shares the base model of `host` (no second copy)."""

    def __init__(self, host: TRLTrainer, *, checkpointing=False, chunked_head=False, gc=False):
        self.__dict__.update(host.__dict__)
        self.checkpointing, self.chunked_head, self.gc = checkpointing, chunked_head, gc

    def _trl_args(self, work: Path) -> dict:
        return {**super()._trl_args(work), "activation_checkpointing": self.checkpointing}

    def _replace_lm_head(self, model) -> None:
        if not self.chunked_head:
            super()._replace_lm_head(model)

    def _run_trainer(self, trainer) -> None:
        trainer.train() if self.gc else super()._run_trainer(trainer)


ABLATIONS = {  # name: what is put back
    "trl+checkpointing": {"checkpointing": True},
    "trl+chunked_head": {"chunked_head": True},
    "trl+gc_collect": {"gc": True},
    "trl_defaults": {"checkpointing": True, "chunked_head": True, "gc": True},
}


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


def _timed_run(trainer, mode: str, sft, pairs, work: Path, name: str) -> dict:
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
    ablate: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Seconds per optimizer step of TRLTrainer and TorchLoopTrainer on the same `steps` steps
    over `examples` (SFT examples for mode 'sft', pairs for 'dpo'), interleaved `repeats` times.

    Returns trl_s_per_step, loop_s_per_step (CPU seconds per step, whole train() calls
    included) and trl_over_loop, plus wall-clock figures (see `_summary`). With `ablate`,
    also TRL with each of the TRL defaults we turn off put back (ABLATIONS), as ratios to the loop.
    """
    settings = settings or TrainingSettings(epochs=1)
    settings = TrainingSettings(**{**settings.__dict__, "epochs": 1})
    data = _repeat_to(list(examples), steps * settings.batch_size)
    sft, pairs = (data, []) if mode == "sft" else ([], data)
    warm_sft, warm_pairs = sft[: settings.batch_size], pairs[: settings.batch_size]
    trainers = {
        "trl": TRLTrainer(base_path, settings, device="cpu"),
        "loop": TorchLoopTrainer(base_path, settings, device="cpu"),
    }
    if ablate:
        trainers |= {name: TRLDefault(trainers["trl"], **put) for name, put in ABLATIONS.items()}
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
    paired = [t["wall"] / b["wall"] for t, b in zip(runs["trl"], runs["loop"], strict=True)]
    step = {name: statistics.median(g for r in rs for g in r["gaps"]) for name, rs in runs.items()}
    return {
        "trl_s_per_step": round(cpu["trl"], 3),
        "loop_s_per_step": round(cpu["loop"], 3),
        "trl_over_loop": round(cpu["trl"] / cpu["loop"], 3),
        "wall_trl_s_per_step": round(wall["trl"], 3),
        "wall_loop_s_per_step": round(wall["loop"], 3),
        "wall_paired_ratio_median": round(statistics.median(paired), 3),
        "wall_step_median_ratio": round(step["trl"] / step["loop"], 3),
        **{f"{n}_over_loop": round(cpu[n] / cpu["loop"], 3) for n in ABLATIONS if n in cpu},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16, help="optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per trainer, interleaved")
    parser.add_argument("--examples", type=int, default=30)
    parser.add_argument("--mode", choices=("sft", "dpo"), default="sft")
    parser.add_argument("--ablate", action="store_true", help="also TRL with its defaults back")
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
    result = compare(
        str(base), examples, args.steps, mode=args.mode, repeats=args.repeats, ablate=args.ablate
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
