"""The poisoning study from start to summary: the crowd's material, both arms, the pooled
model, the judgement on the clean reference and the outputs (crowd.sim.poisoning is the
command line)."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crowd.sim.common import set_threads
from crowd.sim.convergence_data import Neighbourhood
from crowd.sim.convergence_rounds import SimulationError
from crowd.sim.poisoning_crowd import Material, Volunteer
from crowd.sim.poisoning_record import champions, crowned_kinds, points, used_by, write_json
from crowd.sim.poisoning_report import (
    auroc,
    by_role,
    honest_share,
    plot,
    regressions,
    write_csv,
)
from crowd.sim.poisoning_study import ARMS, PoisonConfig, Study
from crowd.threads import run_in_own_thread
from storage.rows import must

if TYPE_CHECKING:
    from crowd.config import Settings
    from crowd.scoring.scorers import EmotionScorer

Show = Callable[[str, bool], None]  # (line, final): a progress line; final lines end a stage


def material(hoods: dict[str, Neighbourhood], emotion: str, scorer: EmotionScorer) -> Material:
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


def run(whole: Lane) -> dict:
    """The study (`whole`: all its jobs) on `whole.threads` CPU threads. With two or more, it
    runs in two lanes, processes of their own that each load the models and use half the
    threads: the defended arm, then the pooled model and its judgement; beside it, the
    undefended arm, then the judgement of both arms' champions. Two single-threaded lanes on 2 cores do more than one lane on both
    (torch gains about 1.5x from a second thread on these small models, a second process 2x),
    and separate processes share no GIL. Each lane's torch work runs in threads that end with
    each stage (crowd/threads.py, rule 1). Once the second lane has ended, the first takes all
    the threads (`Lane.widen`). The numbers are those of one lane."""
    started, cpu = time.monotonic(), time.process_time()
    config, out = whole.config, whole.out
    lanes = [LANE_A, LANE_B] if whole.threads >= 2 else [ONE_LANE]
    job = replace(whole, threads=max(1, whole.threads // len(lanes)), alone=whole.threads)
    if len(lanes) == 1:
        stats = [job.run(ONE_LANE, lambda: False)]
    else:
        child = multiprocessing.get_context("spawn").Process(
            target=job.run_alone, args=(lanes[1],), name="poisoning-lane"
        )
        child.start()
        try:
            stats = [job.run(lanes[0], child.is_alive)]
        finally:
            child.join()
        if child.exitcode != 0:
            raise SimulationError(f"the lane {'+'.join(lanes[1])} failed (see above)")
        stats.append(json.loads((out / f"lane-{'+'.join(lanes[1])}.json").read_text()))
    return summary(config, out, stats, time.monotonic() - started, time.process_time() - cpu)


LANE_A = ("arm:defended", "pooled", "judge:pooled")
LANE_B = ("arm:undefended", "judge:undefended", "judge:defended")
ONE_LANE = ("arm:defended", "arm:undefended", "pooled", *LANE_B[1:], "judge:pooled")


@dataclass(frozen=True)
class Lane:
    """One process's share of the study's jobs, done in order; a job waits for the files of
    the jobs it reads (written by this lane or the other), and every job's result is kept in
    OUT, so an interrupted study resumes where it stopped."""

    config: PoisonConfig
    hoods: dict[str, Neighbourhood]
    crowd: list[Volunteer]
    out: Path
    settings: Settings
    show: Show
    threads: int
    alone: int = 0  # the threads this lane takes once the other has ended (0: its own)

    def run_alone(self, jobs: tuple[str, ...]) -> None:
        """The second lane, in a process of its own: stops when its parent is gone."""
        parent = multiprocessing.parent_process()
        stats = self.run(jobs, lambda: parent is None or parent.is_alive())
        write_json(self.out / f"lane-{'+'.join(jobs)}.json", stats)

    def run(self, jobs: tuple[str, ...], other_alive: Callable[[], bool]) -> dict:
        """Do `jobs`; `other_alive` says whether the lane that writes what they wait for still
        runs. Returns this lane's seconds and replies."""
        cpu = time.process_time()
        set_threads(self.threads)
        c = self.config
        widened: list[float] = []  # when this lane took every thread
        widen = partial(self.widen, other_alive, widened)
        study = run_in_own_thread(
            lambda: Study(c, self.out, self.show, self.settings, widen), name="study-setup"
        )
        m = run_in_own_thread(lambda: material(self.hoods, c.emotion, study.scorer), "material")
        for job in jobs:
            widen()
            kind, _, name = job.partition(":")
            if kind == "arm":
                record = study.run_arm(name, self.crowd, m, self.hoods[c.emotion].target)
                write_json(self.out / name / "record.json", record)
            elif kind == "pooled":
                run_in_own_thread(lambda: self._pooled(study, other_alive), "study-pooled")
            else:
                models = self._models(name, other_alive)
                run_in_own_thread(partial(judge, study, self.out, name, models, m), "study-judge")
        return {
            **study.times,
            "replies_decoded": study.evaluator.decoded,
            "replies_reused": study.evaluator.reused,
            "cpu_s": time.process_time() - cpu,
            "alone_s": time.monotonic() - widened[0] if widened else 0.0,
        }

    def widen(self, other_alive: Callable[[], bool], widened: list[float]) -> None:
        """Once the other lane has ended, this lane's torch work takes `alone` threads (the
        pooled model, trained last, ran its last minutes alone on one of two cores), and
        `widened` gets the time. Called before each job and after each training step, in the
        thread doing the work: torch's count then holds for it and every thread started later."""
        if not widened and self.alone > self.threads and not other_alive():
            set_threads(self.alone)
            widened.append(time.monotonic())

    def _pooled(self, study: Study, other_alive: Callable[[], bool]) -> None:
        """The pooled model, at the defended arm's example-passes; OUT/pooled/done says it is
        settled (trained, or nothing to train on) and holds the passes."""
        done = self.out / "pooled" / "done"
        if done.exists():
            return
        defended = self._record("defended", other_alive)["campaign"]
        self._wait(lambda: crowd_done(self.out, self.config), other_alive, "the undefended crowd")
        passes = study.passes("defended", defended)
        source = must(campaign_id(self.out, "undefended", self.config), "the undefended campaign")
        study.pooled("undefended", source, passes)
        done.parent.mkdir(parents=True, exist_ok=True)
        write_json(done, {"passes": passes})

    def _record(self, arm: str, other_alive: Callable[[], bool]) -> dict:
        path = self.out / arm / "record.json"
        self._wait(path.exists, other_alive, f"the {arm} arm")
        return json.loads(path.read_text())

    def _models(self, name: str, other_alive: Callable[[], bool]) -> dict[str, Path | None]:
        """The models a judge job judges: an arm's champions after each round, or the pooled
        model (none when it had nothing to train on)."""
        if name == "pooled":
            path = self.out / "pooled" / "adapter"
            done = self.out / "pooled" / "done"
            self._wait(done.exists, other_alive, "the pooled model")
            return {"pooled": path} if (path / "adapter_config.json").exists() else {}
        campaign = self._record(name, other_alive)["campaign"]
        return {
            _key(name, version, adapter): self.out / name / adapter if adapter else None
            for _, version, adapter in champions(self.out, name, campaign)
        }

    @staticmethod
    def _wait(ready: Callable[[], bool], other_alive: Callable[[], bool], what: str) -> None:
        while not ready():
            if not other_alive() and not ready():
                raise SimulationError(f"{what} never finished: the other lane stopped")
            time.sleep(1)


def campaign_id(out: Path, arm: str, config: PoisonConfig) -> int | None:
    from storage import rounds as store
    from storage.db import connect

    path = out / arm / "crowd.db"
    if not path.exists():
        return None
    with connect(path) as db:
        try:
            campaign = store.campaign_named(db, f"{config.emotion}/{arm}")
        except sqlite3.OperationalError:  # the other lane has created it, not yet migrated it
            return None
        return campaign["id"] if campaign else None


def crowd_done(out: Path, config: PoisonConfig) -> bool:
    """Whether the undefended crowd has acted in every round (its last round is closed): all
    the pooled model trains on is in; the arm's last training need not have ended."""
    from storage import rounds as store
    from storage.db import connect

    campaign = campaign_id(out, "undefended", config)
    if campaign is None:
        return False
    with connect(out / "undefended" / "crowd.db") as db:
        rounds = {r["number"]: r["state"] for r in store.rounds_of(db, campaign)}
    return rounds.get(config.rounds, "open") != "open"


def judge(study: Study, out: Path, name: str, models: dict, m: Material) -> None:
    """Every model's distance on the clean reference, kept in OUT/NAME/judged.json for its
    number of replies (a rerun with the same number judges nothing again)."""
    path = out / name / "judged.json"
    before = json.loads(path.read_text()) if path.exists() else {}
    if before.get("final_samples") == study.config.final_samples:
        return
    study.show(f"judging {len(models)} {name} models on the clean reference ...", True)
    judged = study.judge(models, m.centroid) if models else {}
    write_json(path, {"final_samples": study.config.final_samples, "models": judged})


def summary(config: PoisonConfig, out: Path, stats: list[dict], wall: float, cpu: float) -> dict:
    """The study's last line, from what its jobs kept in OUT and the lanes' `stats`."""
    records = {arm: json.loads((out / arm / "record.json").read_text()) for arm in ARMS}
    judged = {
        k: v
        for name in (*ARMS, "pooled")
        for k, v in json.loads((out / name / "judged.json").read_text())["models"].items()
    }
    passes = json.loads((out / "pooled" / "done").read_text())["passes"]
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
    total = {key: sum(s.get(key, 0) for s in stats) for key in stats[0]}
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
        "adversary_action_share": {arm: records[arm].get("action_share") for arm in ARMS},
        "crowned_kinds": {arm: crowned_kinds(out, arm, records[arm]["campaign"]) for arm in ARMS},
        "candidates": config.candidates,
        "honest_share_of_training": shares["defended"],
        "undefended_honest_share_of_training": shares["undefended"],
        "train_s": round(total["train_s"], 1),
        "judge_s": round(total["judge_s"], 1),
        "replies_decoded": total["replies_decoded"],
        "replies_reused": total["replies_reused"],
        "lanes": len(stats),
        "alone_s": round(total["alone_s"], 1),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu + sum(s["cpu_s"] for s in stats[1:]), 1),
        "results": str(out / "results.csv"),
        "plot": str(out / "poisoning.png"),
    }


def _key(arm: str, version: int, adapter: str | None) -> str:
    return "base" if adapter is None else f"{arm}/v{version}"
