"""Every candidate a poisoning study's arm trained, judged on the study's clean reference: was
the loop behind the pooled model because its judge chose badly, or because no candidate learned
enough? (docs/results/candidates.md, "Admiration at 0 %".)

    .venv/bin/python bench/study_candidates.py RUN [--arm defended] [--samples 100] [--rounds 3 4]

RUN is a finished `python -m crowd simulate poisoning --out RUN`. The pooled model is judged
first, then each kept candidate of the named rounds (RUN/ARM/adapters/c1/rN/KIND), on the first
SAMPLES of the study's own reference replies (its seed, prompt and centroid, so the pooled
model's number at the study's --final-samples is the study's). One JSON line per model as it
goes; nothing in RUN is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared/data/goemotions/goemotions_neighborhoods.jsonl"
KINDS = ("union", "merged", "g0", "g1", "g2", "g3", "g4", "g5")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--arm", default="defended", choices=["defended", "undefended"])
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--rounds", type=int, nargs="+", default=[3, 4])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", type=Path, default=DATA, help="the study's --data (checked)")
    a = p.parse_args()
    import torch

    from crowd.config import load_settings
    from crowd.sim.convergence_data import read_neighbourhoods
    from crowd.sim.poisoning_run import material
    from crowd.sim.poisoning_study import PoisonConfig, Study

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
            print(json.dumps({key: study.judge({key: path}, centroid)[key]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
