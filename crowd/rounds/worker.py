"""The background worker: one thread that closes rounds by their policy and runs round jobs,
each driven from a thread of its own at a lower priority (crowd/threads.py) through the
engine's runner (crowd.rounds.runners).

Jobs live in SQLite (status pending -> running -> finished | failed | cancelled). Cancel is a
plain UPDATE that the engine notices between training steps (or between two polls of a child
process or a Hugging Face Job, which it then cancels). Jobs left 'running' by a process that
died are re-queued at start-up; the engine resumes the round from its stored state, and picks
up a Hugging Face Job that still runs. A runner that fails (a crash, a kill, a timeout, a job
that vanished, results that do not match the bundle) re-queues the job, up to MAX_FAILURES
times, the error kept on the job for the organizer; a bad bundle or a refused job is left
failed for the organizer at once. Nothing is crowned from partial results.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from crowd.rounds.bundle import BundleError
from crowd.rounds.engine import RoundEngine
from crowd.rounds.results import ResultsMismatch
from crowd.rounds.runners import JobFailed
from crowd.rounds.state import check_auto_close
from crowd.threads import run_in_own_thread
from crowd.training.data import TrainingCancelled
from storage import records
from storage import rounds as store
from storage.db import connect
from storage.rows import Job, must

log = logging.getLogger(__name__)

MAX_FAILURES = 3  # runner failures of one job before it is left for the organizer


class Worker:
    def __init__(
        self,
        db_path: Path,
        engine_factory: Callable[[], RoundEngine],
        now: Callable[[], str],
        poll_s: float = 1.0,
        rng: random.Random | None = None,
        nice: int = 0,
    ):
        self.db_path = db_path
        self._engine_factory = engine_factory
        self._engine: RoundEngine | None = None  # built on the first job: it loads models
        self.now = now
        self.poll_s = poll_s
        self.rng = rng or random.Random()
        self.nice = nice
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with connect(db_path) as db:
            requeued = store.requeue_running_jobs(db)
        if requeued:
            log.info("re-queued %d job(s) left running by a previous process", requeued)

    @property
    def engine(self) -> RoundEngine:
        if self._engine is None:
            self._engine = self._engine_factory()
        return self._engine

    def start(self) -> Worker:
        self._thread = threading.Thread(target=self._loop, name="round-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.step()
            except Exception:  # keep serving: a broken job is recorded, the thread lives on
                log.exception("worker step failed")
                worked = False
            if not worked:
                self._stop.wait(self.poll_s)

    def step(self) -> bool:
        """Close a due round, then run one pending job. True if a job ran."""
        with connect(self.db_path) as db:
            check_auto_close(db, self.now(), self.rng)
            job = store.claim_job(db, self.now())
        if job is None:
            return False
        # A thread per job, below the replies' priority; it and its torch threads end with the
        # job (crowd/threads.py: a live idle pool would slow the replies' decoding by half).
        run_in_own_thread(lambda: self.run_job(job), name="round-job", nice=self.nice)
        return True

    def run_job(self, job: Job) -> None:
        status, error, tail = "finished", None, None
        try:
            self.engine.run(job)
        except TrainingCancelled:
            status = "cancelled"
        except (JobFailed, ResultsMismatch) as exc:
            tail = getattr(exc, "log_tail", "") or None
            retry = getattr(exc, "retry", True)
            if isinstance(exc, ResultsMismatch):
                self._set_aside(job, exc)
            status, error = self._after_failure(job, str(exc), retry)
        except BundleError as exc:
            status, error = "failed", f"the round's bundle cannot be used: {exc}"
            log.error("job %s: %s", job["id"], error)
        except Exception as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            log.error("job %s failed:\n%s", job["id"], traceback.format_exc())
        with connect(self.db_path) as db:
            if store.job_status(db, job["id"]) != "cancelled":
                store.update_job(db, job["id"], self.now(), status=status, error=error)
                if status != "pending":
                    store.update_job(db, job["id"], self.now(), finished_at=self.now())
                if tail is not None:
                    records.set_runner(db, job["id"], log_tail=tail)

    def _after_failure(self, job: Job, message: str, retry: bool) -> tuple[str, str]:
        """(status, error) after a runner failure: queued again while it may help."""
        with connect(self.db_path) as db:
            failures = (must(store.get_job(db, job["id"]), f"job {job['id']}")["failures"] or 0) + 1
            records.set_runner(db, job["id"], failures=failures)
        if retry and failures < MAX_FAILURES:
            log.warning(
                "job %s failed (%d of %d), queued again: %s",
                job["id"],
                failures,
                MAX_FAILURES,
                message,
            )
            return "pending", f"attempt {failures} failed, trying again: {message}"
        log.error("job %s failed, left for the organizer: %s", job["id"], message)
        return "failed", message

    def _set_aside(self, job: Job, exc: ResultsMismatch) -> None:
        """Move an OUT whose results do not match the bundle aside, and forget the job that
        wrote it, so that the retry starts clean."""
        if exc.out is not None and exc.out.exists():
            exc.out.rename(exc.out.with_name(f"{exc.out.name}.rejected-{int(time.time())}"))
        with connect(self.db_path) as db:
            records.set_runner(db, job["id"], external_id=None)
