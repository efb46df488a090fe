"""One emotion of the convergence study: both arms through the project's own rounds, then
the final judgement (see crowd.sim.convergence for the protocol and the command line)."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from crowd.sim.common import PAPER_SAMPLES, on_the_reference, study_engine, study_kit
from crowd.sim.convergence_data import Neighbourhood, deal, generation_rng
from crowd.sim.convergence_rounds import (
    ALWAYS_MOVE,
    Arm,
    RoundDriver,
    open_campaign,
    round_number,
    round_result,
    submit_and_close,
    trained_candidate,
    version,
)

if TYPE_CHECKING:
    from crowd.config import Settings


@dataclass(frozen=True)
class StudyConfig:
    """Everything a run's numbers depend on; a resumed run must ask for the same."""

    data_sha256: str  # the input file's content
    groups: int
    segments: tuple[int, ...]  # items per group in generation 1, 2, ...
    samples: int  # replies per model when a round picks its winner
    scorer: str
    seed: int
    selection: str  # 'best' | 'improve'
    base_model: str
    epochs: int
    learning_rate: float
    max_new_tokens: int
    batch_size: int  # replies decoded together
    min_examples: int = 0  # more epochs for small segments (TrainingSettings.min_examples)
    final_samples: int = PAPER_SAMPLES  # replies per final model; may change between reruns
    union: bool = False  # issue 28: the multi arm's union candidate (all segments of a round)
    merge: str = "off"  # ... and its merged candidate


JUDGING_ONLY = {"final_samples"}
"""Settings that only the final judgement reads: a rerun may change them and re-judges."""


class Study:
    """One loaded engine (base model, trainer, evaluator, scorer) for every emotion of a run."""

    def __init__(
        self,
        config: StudyConfig,
        out: Path,
        show: Callable[[str, bool], None],
        settings: Settings,
    ):
        from datasets import disable_progress_bars

        from crowd.campaigns import utcnow
        from crowd.scoring.scorers import load_scorer
        from storage.db import migrate

        disable_progress_bars()  # TRL maps every small dataset with a bar: noise in the log
        self.config, self.show, self.now = config, show, utcnow
        self.data_dir = out / "data"
        self.db_path = self.data_dir / "crowd.db"
        migrate(self.db_path)
        show("loading the base model, the trainer's copy and the scorer ...", True)
        self.scorer = load_scorer(config.scorer, self.data_dir)
        self.kit = study_kit(settings, config)
        self.engine = study_engine(
            replace(settings, data_dir=self.data_dir), config, self.kit, lambda _: self.scorer
        )
        self.driver = RoundDriver(self.db_path, self.engine, utcnow, show)

    def run_emotion(self, hood: Neighbourhood) -> dict:
        """Both arms and the final judgement for one emotion; returns its result record."""
        started, cpu = time.monotonic(), time.process_time()
        single = self._single(hood)
        multi = self._multi(hood)
        final = self._final(hood, single.pop("version"), multi.pop("version"))
        return {
            "emotion": hood.emotion,
            **final,
            "pool": len(hood.neighbours),
            "single_arm": single,
            "multi_arm": multi,
            "wall_s": round(time.monotonic() - started, 1),
            "cpu_s": round(time.process_time() - cpu, 1),
        }

    def _single(self, hood: Neighbourhood) -> dict:
        arm = Arm(f"{hood.emotion}/single", hood.emotion, hood.target, 1, ALWAYS_MOVE)
        campaign = open_campaign(self.db_path, self.data_dir, arm, self.now())
        round_ = round_number(self.db_path, campaign, 1)
        items = list(range(len(hood.neighbours)))
        if round_["state"] == "open":
            submit_and_close(
                self.db_path,
                campaign,
                1,
                {0: items},
                hood.neighbours,
                self.now(),
                random.Random(self.config.seed),
            )
        label = f"[{hood.emotion}] single model on {len(items)} items"
        self.driver.finish(round_["id"], label)
        result = round_result(self.db_path, round_["id"], 1)
        return {
            "base_to_target": result["champion"],
            "to_target": result["candidates"].get("0"),
            "version": trained_candidate(self.db_path, round_["id"], 0, label),
        }

    def _multi(self, hood: Neighbourhood) -> dict:
        c = self.config
        margin = ALWAYS_MOVE if c.selection == "best" else 0.0
        arm = Arm(f"{hood.emotion}/multi", hood.emotion, hood.target, c.groups, margin)
        extra = {"union_candidate": c.union, "merge_method": c.merge}
        campaign = open_campaign(self.db_path, self.data_dir, arm, self.now(), extra)
        pool, generations, result = list(range(len(hood.neighbours))), [], {}
        for generation, size in enumerate(c.segments, 1):
            segments = deal(pool, c.groups, size, generation_rng(c.seed, hood.emotion, generation))
            round_ = round_number(self.db_path, campaign, generation)
            if round_["state"] == "open":
                submit_and_close(
                    self.db_path,
                    campaign,
                    generation,
                    segments,
                    hood.neighbours,
                    self.now(),
                    random.Random(c.seed),
                )
            self.driver.finish(
                round_["id"],
                f"[{hood.emotion}] generation {generation}/"
                f"{len(c.segments)}: {c.groups} x {size} items",
            )
            result = round_result(self.db_path, round_["id"], c.groups)
            generations.append(
                {
                    "generation": generation,
                    "pool": len(pool),
                    "segment": size,
                    **{k: v for k, v in result.items() if k != "winner_id"},
                }
            )
            if result["improved"]:
                pool = _after_win(pool, segments, result["winner"], c, generation, hood)
        return {"generations": generations, "version": version(self.db_path, result["winner_id"])}

    def _final(self, hood: Neighbourhood, single: dict, multi: dict) -> dict:
        """Both final models' mean L2 distance to the pool's centroid, on the same samples'
        seed, in the same batches."""
        from crowd.scoring.scorers import target_vector

        self.show(f"[{hood.emotion}] judging both final models against the pool's centroid", True)
        evaluator = self.kit.evaluator
        names = [
            evaluator.load(
                f"v{v['id']}", self.data_dir / v["adapter_path"] if v["adapter_path"] else None
            )
            for v in (single, multi)
        ]
        centroid = target_vector(self.scorer, hood.neighbours, hood.emotion)  # mean of the pool
        scores = on_the_reference(
            evaluator, names, self.scorer, centroid, self.config, self.config.final_samples
        )
        s, m = scores[0].value, scores[1].value
        se_s, se_m = (x.detail["sd"] / math.sqrt(x.n_items) for x in scores)
        return {
            "single": round(s, 6),
            "multi": round(m, 6),
            "reduction_pct": round(100.0 * (s - m) / s, 3) if s > 0 else 0.0,
            "reduction_se_pct": round(reduction_se(s, m, se_s, se_m), 3),
            "final_samples": self.config.final_samples,
            "examples": {
                "single": scores[0].detail["samples"],
                "multi": scores[1].detail["samples"],
            },
        }


def _after_win(
    pool: list[int],
    segments: dict[int, list[int]],
    winner: str,
    config: StudyConfig,
    generation: int,
    hood: Neighbourhood,
) -> list[int]:
    """The pool after a crowning: the winner's items leave it (the paper's rule); a union or
    merged winner learned every segment, so all of them leave. When that leaves fewer items
    than the next generation deals, the whole pool comes back (a new pass over the data)."""
    won = [segments[int(winner)]] if winner.isdigit() else list(segments.values())
    leaving = {item for items in won for item in items}
    left = [item for item in pool if item not in leaving]
    following = config.segments[generation] if generation < len(config.segments) else 0
    if len(left) < following * config.groups:
        return list(range(len(hood.neighbours)))
    return left


def reduction_se(single: float, multi: float, se_single: float, se_multi: float) -> float:
    """Standard error (in %) of 100 * (1 - multi / single) for independent estimates (delta
    method); 0 when single is 0."""
    if single <= 0:
        return 0.0
    return 100.0 * math.hypot(se_multi / single, multi * se_single / single**2)
