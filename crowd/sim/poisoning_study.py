"""One emotion of the poisoning study: the defended and the undefended loop on identical crowds
through the real service, review, round engine, trainer and evaluator; the pooled model at
equal example-passes; and the judgement of every round's champion on the clean reference (see
crowd.sim.poisoning for the protocol and the command line)."""

from __future__ import annotations

import itertools
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from crowd.sim.common import on_the_reference, study_engine, study_kit
from crowd.sim.convergence_rounds import (
    CHAT,
    WITHOUT_CANDIDATES,
    RoundDriver,
    round_number,
)
from crowd.sim.poisoning_crowd import Behaviour, CrowdRound, Material, ScriptedReplies, Volunteer
from crowd.sim.poisoning_record import action_share
from crowd.threads import run_in_own_thread
from storage.rows import Correction, Round

if TYPE_CHECKING:
    import numpy as np

    from crowd.config import Settings
    from crowd.evaluation import Evaluator
    from crowd.scoring.scorers import EmotionScorer
    from crowd.service import CrowdService
    from crowd.training.trainer import TRLTrainer

ARMS = ("defended", "undefended")
ORGANIZER_KEY = "poisoning-study-organizer"


@dataclass(frozen=True)
class PoisonConfig:
    """Everything a run's numbers depend on; a resumed run must ask for the same."""

    data_sha256: str
    emotion: str
    volunteers: int
    groups: int
    rounds: int
    adversaries: float
    mix: dict
    seed: int
    scorer: str
    base_model: str
    epochs: int
    min_examples: int
    learning_rate: float
    samples: int  # replies per model when a round judges its candidates
    final_samples: int  # replies per model on the clean reference
    max_new_tokens: int
    batch_size: int
    reviews: int
    flood: int
    noise: float
    min_reviews: int
    person_cap: float
    points_rule: str = "shapley"
    sign_in: bool = False  # everyone has an account; the defended campaign requires one
    ring_accounts: int = 1  # the ring's accounts, with sign-in
    hold_unreviewed: bool = False  # defended arm: only trusted corrections train
    # Issue 28's candidates and judge in both arms: CampaignSpec fields (crowd.rounds.candidates,
    # .judge) over WITHOUT_CANDIDATES, so a run from before them reads as what it was.
    candidates: dict = field(default_factory=dict)


class Study:
    """One loaded base, trainer, evaluator and scorer: what one lane's jobs (both arms, the
    pooled model, the judgements, or a share of them: crowd.sim.poisoning_run) work with."""

    def __init__(
        self,
        config: PoisonConfig,
        out: Path,
        show: Callable[[str, bool], None],
        settings: Settings,
        each_step: Callable[[], None] = lambda: None,
    ):
        """`each_step()` runs after every training step, in the training thread."""
        from datasets import disable_progress_bars

        from crowd.campaigns import utcnow
        from crowd.scoring.scorers import load_scorer

        disable_progress_bars()
        self.config, self.out, self.show, self.now = config, out, show, utcnow
        self.settings = settings
        show("loading the base model, the trainer's copy and the scorer ...", True)
        self.times = {"train_s": 0.0, "judge_s": 0.0}
        trainer = _timed_trainer(self.times, each_step)
        self.kit = study_kit(settings, config, trainer, _timed_evaluator(self.times))
        self.trainer, self.evaluator = self.kit.trainer, self.kit.evaluator
        self.training = self.trainer.settings  # the run's epochs, learning rate and seed
        self.scorer = load_scorer(config.scorer, out)

    # -- the two loops ------------------------------------------------------------------

    def run_arm(self, arm: str, crowd: list[Volunteer], material: Material, target: str) -> dict:
        """Every round of one arm, resuming from its database; returns its record."""
        from crowd.limits import Limits
        from crowd.organizer import Organizer
        from crowd.service import CrowdService

        c, data_dir = self.config, self.out / arm
        settings = replace(
            self.settings,
            data_dir=data_dir,
            n_groups=c.groups,
            organizer_secret=ORGANIZER_KEY,
            # the server's secret places gold items in the review queues: fixed by the seed, so
            # that the same study deals the same items however its arms are laid out in lanes
            identity_secret=self.settings.identity_secret or f"poisoning-study/{c.seed}",
            start_worker=False,
        )
        self._open_campaign(settings, arm, target)
        replies = ScriptedReplies()
        # every limit but the join limit is out of the way: the crowd acts as fast as it can
        limits = Limits(
            chats_per_minute=10**6,
            submissions_per_minute=10**6,
            address_per_minute=10**6,
            reviews_per_minute=10**6,
        )
        rng = random.Random(f"poisoning/{c.seed}/service")
        service = CrowdService(settings, replies, limits, self.now, rng)
        organizer = Organizer(service, random.Random(f"poisoning/{c.seed}/organizer"))
        behaviour = Behaviour(c.reviews, c.flood, c.noise)
        players = CrowdRound(service, replies, crowd, material, behaviour, data_dir, c.seed)
        engine = study_engine(settings, c, self.kit, self._scorer_for)
        driver = RoundDriver(settings.db_path, engine, self.now, self.show)
        campaign_id, _ = self._campaign(service)
        for number in range(1, c.rounds + 1):
            round_ = round_number(settings.db_path, campaign_id, number)
            if round_["state"] == "open":
                started = time.monotonic()
                run_in_own_thread(partial(players.play, number), name="crowd")  # scores texts
                organizer.close_round(ORGANIZER_KEY)
                self.show(
                    f"[{c.emotion}] {arm} round {number}/{c.rounds}: the crowd acted and "
                    f"reviewed in {time.monotonic() - started:.0f}s",
                    True,
                )
            driver.finish(round_["id"], f"[{c.emotion}] {arm} round {number}/{c.rounds}")
        return {
            "campaign": campaign_id,
            "participants": players.participants(),
            "action_share": action_share(settings.db_path, players.participants()),
        }

    def _scorer_for(self, _campaign_id: int) -> EmotionScorer:
        return self.scorer

    def _open_campaign(self, settings: Settings, arm: str, target: str) -> None:
        """The arm's campaign (before the service starts, so it is the active one)."""
        from crowd.campaigns import CampaignSpec, create_campaign
        from storage import rounds as store
        from storage.db import connect, migrate

        c = self.config
        migrate(settings.db_path)
        defended = arm == "defended"
        spec = CampaignSpec(
            name=f"{c.emotion}/{arm}",
            target_emotion=c.emotion,
            n_groups=c.groups,
            prompts=[CHAT[0]["content"]],
            min_corrections=1,
            reviews_on=defended,
            min_reviews=c.min_reviews,
            person_cap=c.person_cap if defended else 1.0,
            points_rule=c.points_rule,
            require_login=defended and c.sign_in,
            hold_unreviewed=defended and c.hold_unreviewed,
            **{**WITHOUT_CANDIDATES, **c.candidates},
        )
        with connect(settings.db_path) as db, db.atomic():
            if store.campaign_named(db, spec.name):
                return
            campaign_id = create_campaign(db, spec, None, settings.data_dir, self.now())
            row = {"kind": "emotion", "text": target, "label": c.emotion}
            store.add_reference_texts(db, campaign_id, [row], self.now())

    @staticmethod
    def _campaign(service: CrowdService) -> tuple[int, Round]:
        campaign, round_ = service.context()
        return campaign["id"], round_

    # -- the pooled model -----------------------------------------------------------------

    def passes(self, arm: str, campaign_id: int) -> int:
        """Example-passes (rows x epochs) of every candidate the arm's rounds trained, as their
        bundles list them (group and union, with their memory; a merge trains nothing)."""
        from crowd.rounds.bundle import read_bundle
        from storage import records
        from storage import rounds as store
        from storage.db import connect

        total = 0
        with connect(self.out / arm / "crowd.db") as db:
            done = [r for r in store.rounds_of(db, campaign_id) if r["state"] == "done"]
            paths = [record["path"] for r in done if (record := records.bundle_of(db, r["id"]))]
        for path in paths:
            bundle = read_bundle(self.out / arm / path)
            for c in bundle.candidates:
                if c.kind != "merged":
                    n = sum(1 for e in bundle.examples_of(c) if e.sft)
                    total += n * self.training.epochs_for(n, c.scale)
        return total

    def pooled(self, source: str, campaign_id: int, passes: int) -> Path | None:
        """One model trained once, from the base, on every SFT example that every volunteer's
        corrections teach (all rounds of `source`, no review, no cap), repeated or cut to the
        defended loop's example-passes. Kept in OUT/pooled/adapter; trained once."""
        out_dir = self.out / "pooled" / "adapter"
        if (out_dir / "adapter_config.json").exists():
            return out_dir
        sft = self._everything(source, campaign_id)
        if not sft or passes < 1:
            return None
        rng = random.Random(f"poisoning/{self.config.seed}/pooled")
        order = list(sft)
        rng.shuffle(order)
        partial = out_dir.with_name("adapter.partial")
        shutil.rmtree(partial, ignore_errors=True)
        self.from_base(order, passes, partial, "pooled model")
        partial.replace(out_dir)
        return out_dir

    def from_base(self, sft: list, passes: int, out_dir: Path, what: str) -> None:
        """One model trained once from the base on `sft` (in its order), repeated or cut to
        `passes` example-passes (rows x epochs), written to `out_dir`."""
        rows = _rows_for(passes, self.training.epochs_for)
        data = list(itertools.islice(itertools.cycle(sft), rows))
        self.show(f"[{self.config.emotion}] {what}: {rows} rows from {len(sft)}", True)
        self.trainer.train(init_adapter=None, sft=data, pairs=[], mode="sft", out_dir=out_dir)

    def _everything(self, source: str, campaign_id: int) -> list:
        from crowd.rounds.material import group_data
        from storage import rounds as store
        from storage.db import connect

        sft: list = []
        with connect(self.out / source / "crowd.db") as db:
            for round_ in store.rounds_of(db, campaign_id):
                live = [_for_training(c) for c in store.round_corrections(db, round_["id"])]
                for group in group_data(live, "emotion", self.config.emotion).values():
                    sft += group.sft
        return sft

    # -- the clean reference ---------------------------------------------------------------

    def judge(self, adapters: dict[str, Path | None], centroid: np.ndarray) -> dict[str, dict]:
        """Every named model's mean L2 distance (and its standard error) over final_samples
        replies to the centroid, all on the same seed and batches."""
        names = [self.evaluator.load(key, path) for key, path in adapters.items()]
        scores = on_the_reference(
            self.evaluator, names, self.scorer, centroid, self.config, self.config.final_samples
        )
        return {
            key: {
                "distance": round(s.value, 6),
                "se": round(s.se, 6),
            }
            for key, s in zip(adapters, scores)
        }


def _timed_trainer(times: dict[str, float], each_step: Callable[[], None]) -> type[TRLTrainer]:
    """The real trainer, adding the seconds each training takes to times['train_s'] and
    calling `each_step()` after every optimizer step, in the training thread."""
    from crowd.training.trainer import TRLTrainer

    class TimedTrainer(TRLTrainer):
        def train(self, *args, progress=None, **kwargs):
            def step(p):
                each_step()
                return progress(p) if progress else True

            started = time.monotonic()
            try:
                return super().train(*args, progress=step, **kwargs)
            finally:
                times["train_s"] += time.monotonic() - started

    return TimedTrainer


def _timed_evaluator(times: dict[str, float]) -> type[Evaluator]:
    """The real evaluator, adding the seconds each judgement takes to times['judge_s']."""
    from crowd.evaluation import Evaluator

    class TimedEvaluator(Evaluator):
        def evaluate(self, *args, **kwargs):
            started = time.monotonic()
            try:
                return super().evaluate(*args, **kwargs)
            finally:
                times["judge_s"] += time.monotonic() - started

    return TimedEvaluator


def _for_training(correction: Correction) -> Correction:
    """`correction` as a training row, whatever its split: the pooled model learns from all."""
    row = correction.copy()
    row["split"] = "train"
    return row


def _rows_for(passes: int, epochs_for: Callable[[int], int]) -> int:
    """The number of rows whose epochs bring them closest to `passes` example-passes."""
    best, best_gap = 1, passes
    for rows in range(1, passes + 1):
        gap = abs(rows * epochs_for(rows) - passes)
        if gap < best_gap:
            best, best_gap = rows, gap
    return best
