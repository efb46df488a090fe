"""Every candidate a poisoning study's arm trained, judged on the study's clean reference: was
the loop behind the pooled model because its judge chose badly, or because no candidate learned
enough? (docs/results/candidates.md, "Admiration at 0 %".)

    .venv/bin/python bench/study_candidates.py RUN [--arm defended] [--samples 100] [--rounds 3 4]
        [--from-base PASSES [--union-round 4]]

RUN is a finished `python -m crowd simulate poisoning --out RUN`. The pooled model is judged
first, then each kept candidate of the named rounds (RUN/ARM/adapters/c1/rN/KIND), on the first
SAMPLES of the study's own reference replies (its seed, prompt and centroid, so the pooled
model's number at the study's --final-samples is the study's). One JSON line per model as it
goes; nothing in RUN is written. `--from-base PASSES`: besides, a model trained once from the
base on what round --union-round's union trained on (its bundle: every group's material and
the memory), at PASSES example-passes as the pooled model is: is the union's line behind the
pooled model for its passes or for training in short schedules, each from the last?
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared/data/goemotions/goemotions_neighborhoods.jsonl"
KINDS = ("union", "merged", "g0", "g1", "g2", "g3", "g4", "g5")


def main() -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("run", type=Path, help="a finished poisoning study's --out")
    p.add_argument("--arm", default="defended", choices=["defended", "undefended"])
    p.add_argument("--samples", type=int, default=100, help="the first this many reference replies")
    p.add_argument("--rounds", type=int, nargs="*", default=[3, 4], help="none: the pooled only")
    p.add_argument("--threads", type=int, default=1, help="torch's CPU threads")
    p.add_argument("--data", type=Path, default=DATA, help="the study's --data (checked)")
    p.add_argument(
        "--from-base", type=int, default=0, metavar="PASSES", help="train from the base, too"
    )
    p.add_argument(
        "--union-round", type=int, default=4, help="whose union material --from-base takes"
    )
    a = p.parse_args()
    import torch

    from crowd.config import load_settings
    from crowd.sim.convergence_data import read_neighbourhoods
    from crowd.sim.poisoning_run import material
    from crowd.sim.poisoning_study import PoisonConfig, Study

    if not (a.run / "run.json").exists():
        p.error(f"{a.run} holds no run.json: not a poisoning study's --out")
    torch.set_num_threads(a.threads)
    config = PoisonConfig(**json.loads((a.run / "run.json").read_text()))
    if hashlib.sha256(a.data.read_bytes()).hexdigest() != config.data_sha256:
        p.error(f"{a.data} is not the file {a.run} was run on")
    if not Path(config.scorer).exists() and (a.run / "scorer.npz").exists():
        config = replace(config, scorer=str(a.run / "scorer.npz"))  # the run was moved
    config = replace(config, final_samples=a.samples)
    hoods = read_neighbourhoods(a.data)
    models = {"pooled": a.run / "pooled" / "adapter"}
    for number in a.rounds:
        folder = a.run / a.arm / "adapters" / "c1" / f"r{number}"
        models |= {f"r{number}/{k}": folder / k for k in KINDS if (folder / k).exists()}
    with tempfile.TemporaryDirectory() as scratch:
        study = Study(config, Path(scratch), lambda line, final: None, load_settings())
        centroid = material(hoods, config.emotion, study.scorer).centroid
        for key, path in models.items():
            print(json.dumps({key: judged(study, key, path, centroid)}), flush=True)
        if a.from_base:
            sft = union_material(a.run / a.arm, a.union_round)
            out = Path(scratch) / "from-base"
            study.from_base(sft, a.from_base, out, "from the base")
            key = f"r{a.union_round}/union material, from the base, {a.from_base} passes"
            print(json.dumps({key: judged(study, key, out, centroid)}), flush=True)
    return 0


def judged(study, key: str, adapter: Path, centroid) -> dict:
    """The study's judgement of one model on its reference (`Study.judge`), with the share of
    its replies that are distinct: the centroid metric rewards a typical short line repeated."""
    from crowd.sim.common import on_the_reference

    name = study.evaluator.load(re.sub(r"\W", "_", key), adapter)
    config = study.config
    score = on_the_reference(
        study.evaluator, [name], study.scorer, centroid, config, config.final_samples
    )[0]
    return {
        "distance": round(score.value, 6),
        "se": round(score.se, 6),
        "distinct": score.detail["distinct"],
    }


def union_material(arm: Path, number: int) -> list:
    """The SFT examples round `number`'s union candidate trained on, from its bundle."""
    from crowd.rounds.bundle import read_bundle
    from crowd.training.data import SFTExample

    for manifest in (arm / "bundles").glob("*/manifest.json"):
        if json.loads(manifest.read_text())["round"]["number"] == number:
            bundle = read_bundle(manifest.parent)
            union = next(c for c in bundle.candidates if c.kind == "union")
            sft = [SFTExample(e.sft) for e in bundle.examples_of(union) if e.sft]
            random.Random(f"poisoning/{number}/from-base").shuffle(sft)
            return sft
    raise SystemExit(f"{arm}: no bundle for round {number}")


if __name__ == "__main__":
    sys.exit(main())
