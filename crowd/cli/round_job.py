"""`python -m crowd round-job BUNDLE OUT`: train every candidate of a round bundle and judge them
with the champion, from the bundle alone (no database), into OUT; run it again on the same OUT
and it goes on from what OUT holds. What the `process` and `hf-jobs` runners run, and a way to
replay a round by hand. Exit status: 0 done, 2 a bundle (or OUT) that cannot be used, 1 a crash.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m crowd round-job", description=__doc__)
    parser.add_argument("bundle", type=Path, help="the round bundle's folder")
    parser.add_argument("out", type=Path, help="where the adapters, scores and progress go")
    parser.add_argument("--hash", help="the hash the bundle must have (default: its folder name)")
    parser.add_argument(
        "--wait-s",
        type=float,
        default=0.0,
        help="look again for a bundle that is missing or incomplete for this long (a storage "
        "bucket's mount may show it late)",
    )
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from crowd.config import ConfigError, load_settings
    from crowd.rounds.bundle import BundleError, read_bundle

    try:
        settings = load_settings()
        bundle = read_bundle(args.bundle, args.hash, wait_s=args.wait_s)
    except (ConfigError, BundleError) as exc:
        print(f"round-job: {exc}", file=sys.stderr)
        return 2
    from crowd.rounds.job import build_kit, run_round_job  # torch: after the checks
    from crowd.rounds.progress import Reporter

    if settings.model.threads:
        import torch

        torch.set_num_threads(settings.model.threads)
    print(
        f"round-job: bundle {bundle.hash[:12]}, round {bundle.round['number']} of "
        f"{bundle.campaign['name']!r}, {len(bundle.candidates)} candidate(s)",
        flush=True,
    )
    kit = build_kit(
        bundle.base_model,
        bundle.training,
        settings.models_dir,
        settings.model.device,
        bundle.judging,
    )
    try:
        results = run_round_job(bundle, args.out, kit, Reporter(args.out))
    except BundleError as exc:
        print(f"round-job: {exc}", file=sys.stderr)
        return 2
    best = results.best if results.improved else "none (the champion stays)"
    print(
        f"round-job: done; trained {sorted(results.trained)}, failed {sorted(results.failed)}, "
        f"crowned {best}",
        flush=True,
    )
    return 0
