"""One round, from closed to crowned, as a job. Each stage is resumable: a worker killed at any
point picks the round up where SQLite says it stands, and the job where its OUT folder stands.

    1. closing:    draw the held-out share, write the round's bundle and its record
                   (crowd.rounds.record), in one transaction
    2. training,   the runner (crowd.rounds.runners: a thread, a child process, a Hugging Face
       evaluating: Job) trains every candidate and judges them with the champion from the bundle
                   alone (crowd.rounds.job); the worker relays its progress and its cancel
    3. done:       the results checked against the bundle (crowd.rounds.results), then the
                   crowning, points and the next round's champion in one transaction
                   (crowd.rounds.crown)

The candidates are one per group and, by the campaign's settings, a union of every group's data
with memory of earlier rounds and a merge of the group adapters (crowd.rounds.candidates). With
the fixed judge (crowd.rounds.judge), a candidate beats the champion when it is better by the
campaign's `win_margin` plus `crown_z` standard errors of the paired difference of their
held-out scores (emotion task; the preference task compares accuracies as before): with a few
dozen sampled replies per model, the best of three candidates is often better by chance alone,
and crowning it makes the model worse.
A candidate whose sampled replies are mostly one text has collapsed and never wins
(`Score.collapsed`); the best of the others may. The sequential judge reaches the same kind of
decision in looks, spending replies only while the leader's lead is unclear.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlite_utils import Database

from crowd.config import Settings, TrainingSettings
from crowd.evaluation import Evaluator
from crowd.rounds.bundle import Bundle, BundleError, JudgingSettings, check_owner, read_bundle
from crowd.rounds.crown import crown, install_adapters
from crowd.rounds.job import Kit, build_kit
from crowd.rounds.judge import CROWN_Z
from crowd.rounds.record import close_into_bundle
from crowd.rounds.results import Results, read_results
from crowd.rounds.runners import JobFailed, Runner, RunState, ThreadRunner
from crowd.rounds.scorer_cache import ScorerCache
from crowd.rounds.state import advance
from crowd.training.data import TrainingCancelled
from storage import records
from storage import rounds as store
from storage.db import connect, database_id, transaction
from storage.rows import Campaign, Job, Round, must

if TYPE_CHECKING:
    from crowd.rounds.hf_jobs import JobsApi

log = logging.getLogger(__name__)

JOBS = "round-jobs"  # each round's OUT folder, under the data dir
SCHEDULING_MARGIN_S = 900  # hf-jobs: a job may wait this long for hardware before it runs


@dataclass
class RoundEngine:
    """Runs round jobs through `runner`; `training` and `judging` go into every bundle."""

    db_path: Path
    data_dir: Path
    runner: Runner
    scorer_for: Callable[[int], object]  # campaign id -> emotion scorer (may retrain on labels)
    now: Callable[[], str]
    base_model: str
    training: TrainingSettings
    judging: JudgingSettings = field(default_factory=JudgingSettings)
    timeout_s: float | None = None  # a job running longer fails (and is retried)

    @property
    def evaluator(self) -> Evaluator:
        """The in-process judge (the `thread` runner's), for studies and tests."""
        if not isinstance(self.runner, ThreadRunner):
            raise TypeError(f"the {self.runner.name} runner judges outside this process")
        return self.runner.kit_for(None).evaluator

    def run(self, job: Job) -> None:
        """Drive the job's round to 'done'. Raises TrainingCancelled if the job is cancelled,
        JobFailed if its runner failed, BundleError / ResultsMismatch on a bad bundle or results."""
        round_id = must(job["round_id"], f"job {job['id']}'s round")  # a round job has one
        with connect(self.db_path) as db:
            round_ = must(store.get_round(db, round_id), f"round {round_id}")
            campaign = must(store.get_campaign(db, round_["campaign_id"]), "the round's campaign")
        if round_["state"] == "closing":
            self._close(campaign, round_)
        if self._state(round_["id"]) in ("training", "evaluating"):
            bundle = self._bundle(campaign, round_)
            results = self._drive(job, bundle, self.out_dir(round_))
            install_adapters(self.data_dir, campaign, round_, results)
            crown(self.db_path, campaign, round_, bundle, results, self.now())
            shutil.rmtree(self.out_dir(round_), ignore_errors=True)  # crowned: the data dir has it

    def out_dir(self, round_: Round) -> Path:
        return self.data_dir / JOBS / f"r{round_['id']}"

    # 1. closing -----------------------------------------------------------------------------

    def _close(self, campaign: Campaign, round_: Round) -> None:
        scorer = self.scorer_for(campaign["id"]) if campaign["task"] == "emotion" else None
        settings = (self.base_model, self.training, self.judging)
        close_into_bundle(self.db_path, self.data_dir, round_["id"], settings, scorer, self.now())

    def _bundle(self, campaign: Campaign, round_: Round) -> Bundle:
        """The round's bundle as its record names it, checked file by file and for whose it is."""
        with connect(self.db_path) as db:
            record = records.bundle_of(db, round_["id"])
        if record is None:
            raise BundleError(f"round {round_['number']} has no bundle recorded")
        bundle = read_bundle(self.data_dir / record["path"], record["hash"])
        check_owner(bundle, database_id(self.db_path), campaign["id"], round_["id"])
        return bundle

    # 2. the job -----------------------------------------------------------------------------

    def _drive(self, job: Job, bundle: Bundle, out: Path) -> Results:
        """Start (or pick up) the job, relay its progress, cancel it when the organizer does,
        and return its checked results."""
        runner = self.runner
        previous = job.get("external_id") if job.get("runner") == runner.name else None
        handle = runner.start(bundle, out, previous)
        with connect(self.db_path) as db:
            records.set_runner(
                db, job["id"], runner=runner.name, external_id=handle, flavor=runner.flavor
            )
        started, said = time.monotonic(), None
        while True:
            if self._cancelled(job["id"]):
                runner.cancel(handle)
                raise TrainingCancelled(f"job {job['id']} was cancelled")
            state = runner.poll(handle)
            news = (runner.progress(handle, out), state)
            if news != said:  # a commit only when there is news: the replica ships each one
                self._relay(job, *news)
                said = news
            if state.state == "finished":
                return read_results(runner.results(handle, out), bundle)
            if state.state == "failed":
                raise JobFailed(state.message, runner.logs(handle, out))
            if self.timeout_s and time.monotonic() - started > self.timeout_s:
                runner.cancel(handle)
                raise JobFailed(
                    f"the job ran past its timeout of {self.timeout_s:.0f} s",
                    runner.logs(handle, out),
                )
            time.sleep(runner.poll_s)

    def _cancelled(self, job_id: int) -> bool:
        with connect(self.db_path) as db:
            return store.job_status(db, job_id) == "cancelled"

    def _relay(self, job: Job, progress: dict, state: RunState) -> None:
        """The job's progress and the runner's word into the jobs table; the round moves to
        'evaluating' when the job starts judging."""
        with transaction(self.db_path) as db:
            if store.job_status(db, job["id"]) == "cancelled":
                return
            store.update_job(db, job["id"], self.now(), progress=progress)
            records.set_runner(db, job["id"], runner_stage=state.stage, running_s=state.running_s)
            round_id = must(job["round_id"], f"job {job['id']}'s round")
            if progress.get("judging") and _state_of(db, round_id) == "training":
                advance(db, round_id, "evaluating")

    def _state(self, round_id: int) -> str:
        with connect(self.db_path) as db:
            return _state_of(db, round_id)


def _state_of(db: Database, round_id: int) -> str:
    return must(store.get_round(db, round_id), f"round {round_id}")["state"]


def build_engine(
    settings: Settings,
    now: Callable[[], str],
    jobs_api: JobsApi | None = None,
    *,
    kit: Kit | None = None,
    judging: JudgingSettings | None = None,
    scorer_for: Callable[[int], object] | None = None,
) -> RoundEngine:
    """The one way a round engine is built: the app's worker, the demo and the studies.

    Without `kit`, the runner is `CROWD_ROUND_RUNNER`'s: `thread` keeps its own copies of the
    base model (for training and for judging, built by crowd.rounds.job.build_kit) in the app,
    so the serving model never enters train mode; `process` and `hf-jobs` load none in the app.
    With `kit` (models already loaded, the studies'), the `thread` runner runs on it. `jobs_api`:
    the Jobs service for `hf-jobs` (default: huggingface_hub's, with the settings' token);
    `judging`: default the settings' `eval_samples` and the fixed judge's CROWN_Z; `scorer_for`:
    campaign id -> emotion scorer, default the settings' scorer (retrained on labels)."""
    from crowd.rounds.hf_jobs import hf_jobs_runner
    from crowd.rounds.runners import ProcessRunner

    judging = judging or JudgingSettings(samples=settings.eval_samples, crown_z=CROWN_Z)
    runner: Runner
    if kit is not None:
        runner = ThreadRunner(lambda _bundle: kit)
    elif settings.round_runner == "process":
        runner = ProcessRunner(idle_class=settings.job_idle_class)
    elif settings.round_runner == "hf-jobs":
        runner = hf_jobs_runner(settings, jobs_api)
    else:
        runner = ThreadRunner(_kit_builder(settings, judging))
    return RoundEngine(
        settings.db_path,
        settings.data_dir,
        runner,
        scorer_for or ScorerCache(settings.scorer, settings.data_dir, settings.db_path),
        now,
        kit.base_model if kit is not None else settings.model.base_model,
        kit.trainer.settings if kit is not None else settings.training,
        judging,
        timeout_s=None if kit is not None else _backstop(settings),
    )


def _backstop(settings: Settings) -> float | None:
    """When the worker gives a job up: `process` after CROWD_JOB_TIMEOUT_S; `hf-jobs` stops
    its jobs itself after that long running, so the worker waits that plus a margin for the
    job's scheduling and image pull; a thread cannot be stopped from outside."""
    if settings.round_runner == "process":
        return float(settings.job_timeout_s)
    if settings.round_runner == "hf-jobs":
        return settings.job_timeout_s + SCHEDULING_MARGIN_S
    return None


def _kit_builder(settings: Settings, judging: JudgingSettings) -> Callable[[Bundle | None], Kit]:
    """The thread runner's models, loaded on the first job and kept (in the job's thread, so
    torch's threads start at the worker's priority)."""
    kit: list[Kit] = []

    def kit_for(bundle: Bundle | None) -> Kit:
        if not kit:
            m = settings.model
            remote = m if m.serving == "vllm" else None
            built = build_kit(
                m.base_model,
                settings.training,
                settings.models_dir,
                m.device,
                judging,
                remote=remote,
            )
            kit.append(built)
        return kit[0]

    return kit_for
