"""`python -m crowd simulate convergence`: the paper's experiment 1 through the project's own
round engine. Does competition between groups beat one model trained on everything?

For each emotion of a neighbourhoods file (see `convergence_data`), in one data dir under --out:

  1. single arm: one campaign, one group, one round whose corrections are the whole pool (each
     item an SFT pair `user: "write a reddit comment."` -> `assistant: <comment>`); its one
     LoRA candidate is the single model.
  2. multi arm: one campaign of --groups groups and one round per generation: the pool is
     shuffled into one segment per group (--segments items each, per generation), every group
     trains a candidate from the champion, the engine judges them all by the mean L2 distance of
     --samples replies to the target vector (the scorer's vector of the target comment, the
     campaign's reference text) and crowns the best; the winner's segment leaves the pool.
     --selection best (the paper) always moves to the best candidate; improve (the app's rule)
     only when it beats the champion.
  3. both final models are judged together, with the same scorer and seed, by the mean L2
     distance of --final-samples replies (default: --samples, the paper's 50) to the centroid
     of the pool's scorer vectors; reduction = (single - multi) / single, with its standard
     error from the spread of the replies' distances.

Training, judging and crowning are the real worker's (crowd.worker, crowd.engine, TRLTrainer,
Evaluator), on one loaded base shared by every round; crowd.sim.convergence_study drives both
arms, this module is the command line and the resumable loop over emotions. The defaults follow the paper's recipe:
3 epochs, more for small segments (--min-examples 100, the OpenAI fine-tuning API's rule), and a
scorer trained on the file's reference scores. A finished emotion is kept as
OUT/emotions/EMOTION.json and skipped by a rerun; an interrupted one resumes from the rounds
stored in OUT/data/crowd.db. A rerun with another --final-samples judges the finished emotions'
final models again, training nothing. Writes OUT/results.csv and OUT/convergence.png, and
prints one JSON line last. Exit 2 on bad input (nothing written).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path

from crowd.config import ConfigError, ModelSettings, Settings
from crowd.options import Declared, OptionError
from crowd.sim.common import (
    PAPER_SAMPLES,
    TRAINED_SCORER,
    add_model_options,
    campaign_options,
    campaign_values,
    check_resume,
    scorer_spec,
    set_threads,
    train_scorer,
)
from crowd.sim.convergence_data import (
    Neighbourhood,
    StudyInputError,
    check_protocol,
    pick_emotions,
    read_neighbourhoods,
)
from crowd.sim.convergence_rounds import SimulationError
from crowd.sim.convergence_study import JUDGING_ONLY, Study, StudyConfig

MULTI_FLAGS = {"union_candidate": "--union", "merge_method": "--merge"}

SELECTIONS = ("best", "improve")
PAPER_SEGMENTS = (33, 22, 15)


# --- the command line --------------------------------------------------------------------


def _options() -> Declared:
    p = argparse.ArgumentParser(
        prog="python -m crowd simulate convergence", description=__doc__.split("\n\n")[0]
    )
    options = Declared(p)
    p.add_argument("--data", type=Path, required=True, help="neighbourhoods JSONL")
    p.add_argument("--emotions", required=True, help="comma-separated, or 'all'")
    p.add_argument("--out", type=Path, required=True, help="run folder (resumed if it exists)")
    p.add_argument("--groups", type=int, default=3)
    p.add_argument(
        "--generations",
        type=int,
        default=None,
        help="default: one per --segments entry (the paper: 3)",
    )
    p.add_argument(
        "--segments", default=None, help="items per group, per generation (default 33,22,15)"
    )
    p.add_argument(
        "--final-samples",
        type=int,
        default=None,
        help="replies per final model in the single-vs-multi judgement (default: "
        "--samples); changing it on a rerun re-judges, training nothing",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--selection",
        choices=SELECTIONS,
        default="best",
        help="best: always move to the best sub-model (the paper); improve: only "
        "when it beats the champion (the app)",
    )
    campaign_options(
        p,
        MULTI_FLAGS,
        {"union_candidate": False, "merge_method": "off"},  # the paper's loop, by default
        union_candidate="the multi arm's union candidate, trained on all of a generation's segments",
        merge_method="the multi arm's merged candidate",
    )
    add_model_options(options)
    options.add(
        ModelSettings,
        "threads",
        default=None,
        help="torch CPU threads (1 is fastest on a busy machine)",
    )
    return options


def _segments(args: argparse.Namespace) -> tuple[int, ...]:
    if args.segments is None:
        count = 3 if args.generations is None else args.generations
        if not 1 <= count <= len(PAPER_SEGMENTS):
            raise StudyInputError(f"--generations {count} needs --segments (one size each)")
        return PAPER_SEGMENTS[:count]
    try:
        sizes = tuple(int(s) for s in args.segments.split(","))
    except ValueError:
        raise StudyInputError(f"--segments {args.segments!r}: comma-separated integers") from None
    if args.generations is not None and args.generations != len(sizes):
        raise StudyInputError(f"--generations {args.generations} but {len(sizes)} --segments")
    if not sizes or min(sizes) < 1:
        raise StudyInputError("--segments sizes must be at least 1")
    return sizes


def _checked_config(args: argparse.Namespace, settings: Settings) -> StudyConfig:
    for name in ("groups", "final_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise StudyInputError(f"--{name.replace('_', '-')} must be at least 1")
    multi = campaign_values(args, MULTI_FLAGS)
    return StudyConfig(
        data_sha256=hashlib.sha256(args.data.read_bytes()).hexdigest(),
        groups=args.groups,
        segments=_segments(args),
        samples=args.samples,
        scorer=scorer_spec(args.scorer, args.data, args.out, settings),
        seed=args.seed,
        selection=args.selection,
        base_model=args.base_model or settings.model.base_model,
        epochs=args.epochs,
        learning_rate=args.learning_rate or settings.training.learning_rate,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        min_examples=args.min_examples,
        final_samples=args.final_samples or args.samples,
        union=multi["union_candidate"],
        merge=multi["merge_method"],
    )


def _write_json(path: Path, value: dict) -> None:
    """Atomically: a finished emotion's file is either whole or absent."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=1, ensure_ascii=False))
    partial.replace(path)


def _show(line: str, final: bool) -> None:
    if sys.stdout.isatty():
        print(f"\r{line:<100}", end="\n" if final else "", flush=True)
    else:
        print(line, flush=True)


def main(argv: list[str]) -> int:
    """argv[0] is 'convergence'. Exit 0 on success, 2 on bad input (nothing written), 1 if a
    round fails (rerun to resume)."""
    from crowd.config import load_settings
    from crowd.sim.convergence_report import summary, write_outputs

    options = _options()
    args = options.parser.parse_args(argv[1:])
    try:
        options.check(args)
        settings = load_settings()
        hoods = pick_emotions(
            read_neighbourhoods(args.data),
            [e.strip() for e in args.emotions.split(",") if e.strip()],
            args.data,
        )
        config = _checked_config(args, settings)
        for hood in hoods:
            check_protocol(hood, config.groups, config.segments)
        check_resume(args.out, config, "convergence", JUDGING_ONLY)
        (args.out / "emotions").mkdir(parents=True, exist_ok=True)  # the first write
    except (StudyInputError, OptionError, ConfigError, OSError) as exc:
        print(f"simulate convergence: {exc}", file=sys.stderr)
        return 2
    _write_json(args.out / "run.json", asdict(config))
    set_threads(args.threads or settings.model.threads)
    head = args.out / TRAINED_SCORER
    if config.scorer == str(head) and not head.exists():
        train_scorer(args.data, head, _show)
    try:
        results = run(config, hoods, args.out, settings)
    except SimulationError as exc:
        print(f"simulate convergence: {exc}", file=sys.stderr)
        return 1
    write_outputs(args.out, results, config)
    print(json.dumps(summary(args.out, results)))
    return 0


def run(
    config: StudyConfig, hoods: list[Neighbourhood], out: Path, settings: Settings
) -> list[dict]:
    """Every emotion's result record, running only those not finished before."""
    study: Study | None = None
    results = []
    for hood in hoods:
        path = out / "emotions" / f"{hood.emotion}.json"
        before = json.loads(path.read_text()) if path.exists() else None
        if before and before.get("final_samples", PAPER_SAMPLES) == config.final_samples:
            _show(f"[{hood.emotion}] finished before: {path}", True)
            results.append(before)
            continue
        if study is None:  # models load only when there is work
            study = Study(config, out, _show, settings)
        result = study.run_emotion(hood)
        if before:  # re-judged: the rounds' time is the first run's
            result.update(wall_s=before["wall_s"], cpu_s=before["cpu_s"], judge_s=result["wall_s"])
        _write_json(path, result)
        _show(
            f"[{hood.emotion}] single {result['single']:.4f}  multi {result['multi']:.4f}  "
            f"reduction {result['reduction_pct']:+.1f}% ± {result['reduction_se_pct']:.1f}  "
            f"({result['wall_s']:.0f}s)",
            True,
        )
        results.append(result)
    return results
