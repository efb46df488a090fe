"""One round, from closed to crowned. Each stage is resumable: a worker killed at any point
picks the round up where SQLite says it stands, and redoes at most one group's training.

    1. closing:    draw the held-out share of every group's corrections
    2. training:   one LoRA candidate per group with enough data, from the champion adapter
    3. evaluating: every candidate and the champion on the same held-out set
    4. done:       crown the best candidate if it beats the champion, award points

A candidate beats the champion when it is better by the campaign's `win_margin` plus
`crown_z` standard errors of the paired difference of their held-out scores (emotion task; the
preference task compares accuracies as before): with a few dozen sampled replies per model, the
best of three candidates is often better by chance alone, and crowning it makes the model worse.
A candidate whose sampled replies are mostly one text has collapsed and never wins
(`Score.collapsed`); the best of the others may.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crowd.evaluation import EvalSet, Evaluator, Score, split_heldout
from crowd.points import ContributionItem, RoundOutcome
from crowd.rounds.awards import ledger_rows
from crowd.rounds.data import GroupData, heldout_items, judging_material, training_material
from crowd.rounds.scorers import ScorerCache
from crowd.rounds.showcase import make_before_after
from crowd.rounds.state import advance
from crowd.scoring.scorers import target_vector
from crowd.training.base import Progress
from crowd.training.data import PairExample, TrainingCancelled, TrainingFailed
from crowd.training.trainer import Trainer
from storage import rounds as store
from storage.db import connect

log = logging.getLogger(__name__)

MIN_EVAL_PROMPTS = 4
# Standard errors a candidate must beat the champion by: with 3 candidates and no real gain, a
# one-sided 2-sigma test crowns one in about 15 rounds instead of one in two.
CROWN_Z = 2.0
DEFAULT_PROMPT = [{"role": "user", "content": "Write a reddit comment."}]


@dataclass
class RoundEngine:
    """Runs round jobs. `trainer` and `evaluator` hold the worker's own model copies."""

    db_path: Path
    data_dir: Path
    trainer: Trainer
    evaluator: Evaluator
    scorer_for: Callable[[int], object]  # campaign id -> emotion scorer (may retrain on labels)
    now: Callable[[], str]
    crown_z: float = CROWN_Z

    def run(self, job: dict) -> None:
        """Drive the job's round to 'done'. Raises TrainingCancelled if the job is cancelled."""
        with connect(self.db_path) as db:
            round_ = store.get_round(db, job["round_id"])
            campaign = store.get_campaign(db, round_["campaign_id"])
        if round_["state"] == "closing":
            self._draw_heldout(campaign, round_)
        if store_state(self.db_path, round_["id"]) == "training":
            self._train_groups(job, campaign, round_)
        if store_state(self.db_path, round_["id"]) == "evaluating":
            self._judge(job, campaign, round_)

    # 1. closing -----------------------------------------------------------------------------

    def _draw_heldout(self, campaign: dict, round_: dict) -> None:
        with connect(self.db_path) as db, db.atomic():
            by_group: dict[int, list[int]] = defaultdict(list)
            for correction in store.round_corrections(db, round_["id"]):
                by_group[correction["group_index"]].append(correction["id"])
            rng = random.Random(f"heldout-{round_['id']}")  # the same draw if redone
            heldout = split_heldout(by_group, campaign["heldout_share"], rng)
            store.set_split(db, [i for ids in by_group.values() for i in ids], "train")
            store.set_split(db, heldout, "heldout")
            advance(db, round_["id"], "training")

    # 2. training ----------------------------------------------------------------------------

    def _train_groups(self, job: dict, campaign: dict, round_: dict) -> None:
        with connect(self.db_path) as db:
            data, _ = training_material(db, campaign, round_)
            champion = store.get_version(db, round_["champion_id"])
        for group in range(campaign["n_groups"]):
            self._train_group(job, campaign, round_, champion, group, data.get(group, GroupData()))
        with connect(self.db_path) as db:
            advance(db, round_["id"], "evaluating")

    def _train_group(
        self, job: dict, campaign: dict, round_: dict, champion: dict, group: int, data: GroupData
    ) -> None:
        with connect(self.db_path) as db:
            existing = store.candidate_for(db, round_["id"], group)
        if existing and existing["status"] in ("candidate", "failed"):
            return  # trained before a restart
        mode = campaign["training_mode"]
        usable = data.pairs if mode == "dpo" else data.sft
        if data.corrections < campaign["min_corrections"] or not usable:
            return  # sits the round out
        relative = Path("adapters") / f"c{campaign['id']}" / f"r{round_['number']}" / f"g{group}"
        out_dir = self.data_dir / relative
        shutil.rmtree(out_dir, ignore_errors=True)  # a half-written folder from a crash
        init = self.data_dir / champion["adapter_path"] if champion["adapter_path"] else None
        progress = self._progress_reporter(job["id"], group)
        status, error = "candidate", None
        try:
            self.trainer.train(
                init_adapter=init,
                sft=data.sft,
                pairs=data.pairs,
                mode=mode,
                out_dir=out_dir,
                progress=progress,
            )
        except TrainingFailed as exc:
            status, error = "failed", str(exc)
        except TrainingCancelled:
            raise
        except Exception as exc:  # any other crash fails this candidate, not the round
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        with connect(self.db_path) as db:
            version = store.add_version(
                db,
                campaign["id"],
                self.now(),
                adapter_path=str(relative) if status == "candidate" else None,
                status=status,
                round_id=round_["id"],
                group_index=group,
                parent_id=champion["id"],
            )
            if error:
                store.set_version_status(db, version, "failed", error)

    def _progress_reporter(self, job_id: int, group: int) -> Callable[[Progress], bool]:
        last = [0.0]

        def report(p: Progress) -> bool:
            with connect(self.db_path) as db:
                if store.job_status(db, job_id) == "cancelled":
                    return False
                if time.monotonic() - last[0] > 0.5 or p.step == p.steps:
                    last[0] = time.monotonic()
                    store.update_job(
                        db,
                        job_id,
                        self.now(),
                        progress={
                            "stage": f"training group {group}",
                            "group": group,
                            "step": p.step,
                            "steps": p.steps,
                            "loss": p.loss,
                            "eta_s": p.eta_s,
                        },
                    )
            return True

        return report

    def _judging_reporter(self, job_id: int) -> Callable[[float, int], None]:
        """The evaluator's progress as the job's: how many of the models are judged, and an
        estimate of the time left from the pace so far (at most every half second)."""
        start, last = time.monotonic(), [0.0]

        def report(judged: float, models: int) -> None:
            now = time.monotonic()
            if now - last[0] < 0.5 and judged < models:
                return
            last[0] = now
            pace = (now - start) / judged if judged > 0 else None
            progress = {
                "stage": "judging the models",
                "judged": int(judged),
                "models": models,
                "eta_s": round(pace * (models - judged), 1) if pace is not None else None,
            }
            with connect(self.db_path) as db:
                store.update_job(db, job_id, self.now(), progress=progress)

        return report

    # 3-4. evaluating, crowning, points ------------------------------------------------------

    def _judge(self, job: dict, campaign: dict, round_: dict) -> None:
        eval_set = self._eval_set(campaign, round_)
        with connect(self.db_path) as db:
            champion = store.get_version(db, round_["champion_id"])
            candidates = [
                v
                for g in range(campaign["n_groups"])
                if (v := store.candidate_for(db, round_["id"], g)) and v["status"] == "candidate"
            ]
        store_job_progress(self.db_path, job["id"], self.now(), "evaluating")
        names = {
            v["id"]: self.evaluator.load(
                f"v{v['id']}", self.data_dir / v["adapter_path"] if v["adapter_path"] else None
            )
            for v in [champion, *candidates]
        }
        scores = self._scores(eval_set, round_, [champion, *candidates], names, job["id"])
        contenders = [v for v in candidates if not scores[v["id"]].collapsed]
        best = max(contenders, key=lambda v: scores[v["id"]].oriented, default=None)
        improved = best is not None and scores[best["id"]].better_than(
            scores[champion["id"]], campaign["win_margin"], self.crown_z
        )
        with connect(self.db_path) as db:
            data, usage = training_material(db, campaign, round_)
        items = self._contributions(
            campaign, data, names[champion["id"]], names[best["id"]] if best else None
        )
        outcome = RoundOutcome(
            round_id=round_["id"],
            task=campaign["task"],
            improved=improved,
            n_groups=campaign["n_groups"],
            group_scores={v["group_index"]: scores[v["id"]].oriented for v in candidates},
            members=_members(items),
            items=items,
            target=eval_set.target,
        )
        self._crown(campaign, round_, champion, best if improved else None, outcome, usage)
        if improved:
            self._before_after(
                job["id"], round_, names[champion["id"]], names[best["id"]], eval_set
            )

    def _before_after(
        self, job_id: int, round_: dict, before: str, after: str, eval_set: EvalSet
    ) -> None:
        """Volunteers' own prompts answered by the old and the new champion, stored once
        (crowd.rounds.showcase). After the crowning: a failure here costs no result."""
        store_job_progress(self.db_path, job_id, self.now(), "preparing the before/after replies")
        try:
            make_before_after(
                self.evaluator,
                self.db_path,
                round_["id"],
                before,
                after,
                eval_set.target,
                self.now(),
            )
        except Exception:
            log.exception("before/after replies of round %s failed", round_["id"])

    def _eval_set(self, campaign: dict, round_: dict) -> EvalSet:
        with connect(self.db_path) as db:
            heldout = judging_material(db, campaign, round_)
            prompts, pairs = heldout_items(heldout, campaign["task"], campaign["target_emotion"])
            kind = "emotion" if campaign["task"] == "emotion" else "pair"
            references = store.reference_texts(db, campaign["id"], kind)
        if campaign["task"] == "preference":
            pairs += [
                PairExample(
                    json.loads(r["prompt"] or "[]") or DEFAULT_PROMPT, r["chosen"], r["rejected"]
                )
                for r in references
            ]
            return EvalSet("preference", pairs=pairs)
        for text in json.loads(campaign["prompts"] or "[]"):
            if len(prompts) >= MIN_EVAL_PROMPTS:
                break
            prompts.append([{"role": "user", "content": text}])
        self.evaluator.scorer = self.scorer_for(campaign["id"])
        # Texts labelled for another emotion (an earlier target) do not shape this target.
        texts = [
            r["text"]
            for r in references
            if r["text"] and r["label"] in (None, campaign["target_emotion"])
        ]
        target = target_vector(self.evaluator.scorer, texts, campaign["target_emotion"])
        return EvalSet("emotion", prompts=prompts or [DEFAULT_PROMPT], target=target)

    def _scores(
        self,
        eval_set: EvalSet,
        round_: dict,
        versions: list[dict],
        names: dict[int, str],
        job_id: int,
    ) -> dict[int, Score]:
        """Every version on the same items, stored; returns scores by version id."""
        results = self.evaluator.evaluate(
            eval_set, [names[v["id"]] for v in versions], progress=self._judging_reporter(job_id)
        )
        with connect(self.db_path) as db, db.atomic():
            for version, score in zip(versions, results):
                store.add_evaluation(
                    db,
                    self.now(),
                    round_id=round_["id"],
                    model_version_id=version["id"],
                    group_index=version["group_index"],
                    metric=score.metric,
                    value=score.value,
                    loss=score.loss,
                    n_items=score.n_items,
                    detail=score.detail,
                )
        return {v["id"]: s for v, s in zip(versions, results)}

    def _contributions(
        self, campaign: dict, data: dict[int, GroupData], champion: str, best: str | None
    ) -> list[ContributionItem]:
        """Each accepted correction as a points contribution: its target text's emotion vector
        (emotion task) or how much more the best candidate prefers its pair's chosen reply than
        the champion did (preference task)."""
        rows = [
            (g, pid, text, pair)
            for g, d in sorted(data.items())
            for pid, text, pair in d.contributions
        ]
        if campaign["task"] == "emotion":
            vectors = self.evaluator.scorer.score([t for _, _, t, _ in rows]) if rows else []
            return [
                ContributionItem(pid, g, vec, None) for (g, pid, _, _), vec in zip(rows, vectors)
            ]
        margins = {}
        with_pairs = [(i, r[3]) for i, r in enumerate(rows) if r[3] is not None]
        if best is not None and with_pairs:
            gains = np.array(self._margins([p for _, p in with_pairs], best)) - np.array(
                self._margins([p for _, p in with_pairs], champion)
            )
            margins = {i: float(gain) for (i, _), gain in zip(with_pairs, gains)}
        return [
            ContributionItem(pid, g, None, margins.get(i)) for i, (g, pid, _, _) in enumerate(rows)
        ]

    def _margins(self, pairs: list[PairExample], adapter: str) -> list[float]:
        chosen = self.evaluator.mean_log_likelihood([(p.prompt, p.chosen) for p in pairs], adapter)
        rejected = self.evaluator.mean_log_likelihood(
            [(p.prompt, p.rejected) for p in pairs], adapter
        )
        return [c - r for c, r in zip(chosen, rejected)]

    def _crown(
        self,
        campaign: dict,
        round_: dict,
        champion: dict,
        winner: dict | None,
        outcome: RoundOutcome,
        usage: dict,
    ) -> None:
        """Crown `winner` (None keeps the champion), write the points, finish the round."""
        with connect(self.db_path) as db, db.atomic():
            if winner is not None:
                store.set_version_status(db, champion["id"], "retired")
                store.set_version_status(db, winner["id"], "champion")
                following = store.current_round(db, campaign["id"])
                if following["number"] == round_["number"] + 1 and following["state"] == "open":
                    store.set_round_champion(db, following["id"], winner["id"])
            store.add_points(db, ledger_rows(db, campaign, round_, outcome, usage), self.now())
            advance(
                db,
                round_["id"],
                "done",
                winner_id=(winner or champion)["id"],
                improved=int(winner is not None),
                finished_at=self.now(),
            )


def _members(items: list[ContributionItem]) -> dict[int, list[str]]:
    members: dict[int, list[str]] = defaultdict(list)
    for item in items:
        if item.participant_id not in members[item.group_index]:
            members[item.group_index].append(item.participant_id)
    return dict(members)


def store_state(db_path: Path, round_id: int) -> str:
    with connect(db_path) as db:
        return store.get_round(db, round_id)["state"]


def store_job_progress(db_path: Path, job_id: int, now: str, stage: str) -> None:
    with connect(db_path) as db:
        store.update_job(db, job_id, now, progress={"stage": stage})


def build_engine(settings, now: Callable[[], str]) -> RoundEngine:
    """The worker's engine: its own copies of the base model, for training and for judging,
    so the serving model never enters train mode."""
    from crowd.models import load_base, resolve_base_model
    from crowd.training.trainer import TRLTrainer

    base_path = resolve_base_model(settings.model.base_model, settings.models_dir)
    judge = load_base(base_path, settings.models_dir, settings.model.device)
    trainer = TRLTrainer(base_path, settings.training, device=judge.device)
    remote = None
    if settings.model.serving == "vllm":  # the judges' samples come from the same server
        from crowd.vllm_engine import VLLMGeneration

        remote = VLLMGeneration(settings.model)
    evaluator = Evaluator(judge, samples=settings.eval_samples, remote=remote)
    return RoundEngine(
        settings.db_path,
        settings.data_dir,
        trainer,
        evaluator,
        ScorerCache(settings.scorer, settings.data_dir, settings.db_path),
        now,
    )
