"""The poisoning study from start to summary: the crowd's material, both arms, the pooled
model, the judgement on the clean reference and the outputs (crowd.sim.poisoning is the
command line)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from crowd.sim.convergence_data import Neighbourhood
from crowd.sim.poisoning_crowd import Material, Volunteer
from crowd.sim.poisoning_report import (
    auroc,
    by_role,
    honest_share,
    plot,
    regressions,
    write_csv,
)
from crowd.sim.poisoning_study import (
    ARMS,
    Study,
    champions,
    points,
    used_by,
    write_json,
)
from crowd.threads import run_in_own_thread


def material(hoods: dict[str, Neighbourhood], emotion: str, scorer) -> Material:
    """The crowd's texts and the scorer's view of them; `near` is the 90th percentile of the
    target neighbours' distances to their centroid."""
    hood = hoods[emotion]
    others = [t for e, h in sorted(hoods.items()) if e != emotion for t in h.neighbours]
    every = [t for _, h in sorted(hoods.items()) for t in [*h.targets, *h.neighbours]]
    vectors = dict(zip(every, scorer.score(every)))

    def vector(text: str) -> np.ndarray:
        if text not in vectors:
            vectors[text] = scorer.score([text])[0]
        return vectors[text]

    centroid = np.mean([vectors[t] for t in hood.neighbours], axis=0)
    near = float(np.quantile([np.linalg.norm(vectors[t] - centroid) for t in hood.neighbours], 0.9))
    return Material(
        emotion, hood.neighbours, others or hood.neighbours, every, vector, centroid, near
    )


def run(config, hoods, crowd: list[Volunteer], out: Path, settings, show) -> dict:
    """The study; its torch work runs in threads that end with each stage (the round jobs
    already do), so that no idle torch thread pool lives beside a round's (crowd/threads.py,
    rule 1)."""
    started, cpu = time.monotonic(), time.process_time()
    study = run_in_own_thread(lambda: Study(config, out, show, settings), name="study-setup")
    m = run_in_own_thread(
        lambda: material(hoods, config.emotion, study.scorer), name="study-material"
    )
    records = {arm: study.run_arm(arm, crowd, m, hoods[config.emotion].target) for arm in ARMS}
    passes = study.passes("defended", records["defended"]["campaign"])
    pooled = run_in_own_thread(
        lambda: study.pooled("undefended", records["undefended"]["campaign"], passes),
        name="study-pooled",
    )
    judged = run_in_own_thread(
        lambda: _judge(study, out, records, pooled, m.centroid), name="study-judge"
    )
    paths = {
        arm: [
            {"round": n, "version": v, **judged[_key(arm, v, p)]}
            for n, v, p in champions(out, arm, records[arm]["campaign"])
        ]
        for arm in ARMS
    }
    last = {arm: paths[arm][-1] for arm in ARMS}
    pooled_row = judged.get("pooled") and {"round": config.rounds, **judged["pooled"]}
    write_csv(out / "results.csv", paths, pooled_row)
    title = (
        f"{config.emotion}: {config.adversaries:.0%} adversaries, {config.volunteers} "
        f"volunteers, {config.groups} groups"
    )
    plot(out / "poisoning.png", paths, pooled_row, title)
    roles = records["defended"]["participants"]
    totals = points(out, "defended", records["defended"]["campaign"])
    honest = [totals.get(p, 0.0) for p, r in roles.items() if r == "honest"]
    hostile = [totals.get(p, 0.0) for p, r in roles.items() if r != "honest"]
    shares = {  # participant ids differ between arms: each arm's crowd joined its own service
        arm: honest_share(used_by(out, arm, records[arm]["campaign"]), records[arm]["participants"])
        for arm in ARMS
    }
    return {
        "emotion": config.emotion,
        "adversaries": config.adversaries,
        "defended_distance": last["defended"]["distance"],
        "defended_se": last["defended"]["se"],
        "undefended_distance": last["undefended"]["distance"],
        "undefended_se": last["undefended"]["se"],
        "pooled_distance": pooled_row["distance"] if pooled_row else None,
        "pooled_se": pooled_row["se"] if pooled_row else None,
        "pooled_example_passes": passes,
        "champion_regressions": regressions(paths["defended"]),
        "undefended_regressions": regressions(paths["undefended"]),
        "adversary_points_auroc": auroc(honest, hostile),
        "points_by_role": by_role(totals, roles),
        "crowned": {
            arm: sum(a["version"] != b["version"] for a, b in zip(p, p[1:]))
            for arm, p in paths.items()
        },
        "honest_share_of_training": shares["defended"],
        "undefended_honest_share_of_training": shares["undefended"],
        "train_s": round(study.times["train_s"], 1),
        "judge_s": round(study.times["judge_s"], 1),
        "replies_decoded": study.evaluator.decoded,
        "replies_reused": study.evaluator.reused,
        "wall_s": round(time.monotonic() - started, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
        "results": str(out / "results.csv"),
        "plot": str(out / "poisoning.png"),
    }


def _key(arm: str, version: int, adapter: str | None) -> str:
    return "base" if adapter is None else f"{arm}/v{version}"


def _judge(study: Study, out: Path, records: dict, pooled: Path | None, centroid) -> dict:
    """Every distinct model's distance on the clean reference, kept in OUT/judged.json for
    its number of replies (a rerun with the same number judges nothing again)."""
    import json

    path = out / "judged.json"
    before = json.loads(path.read_text()) if path.exists() else {}
    if before.get("final_samples") == study.config.final_samples:
        return before["models"]
    adapters: dict[str, Path | None] = {}
    for arm in ARMS:
        for _, version, adapter in champions(out, arm, records[arm]["campaign"]):
            adapters[_key(arm, version, adapter)] = out / arm / adapter if adapter else None
    if pooled is not None:
        adapters["pooled"] = pooled
    study.show(f"judging {len(adapters)} models on the clean reference ...", True)
    models = study.judge(adapters, centroid)
    write_json(path, {"final_samples": study.config.final_samples, "models": models})
    return models
