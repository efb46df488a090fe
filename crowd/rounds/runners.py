"""Where a round job runs (`CROWD_ROUND_RUNNER`): the protocol every runner follows, and the two
that run on this machine.

- `thread`: in a thread of the app, at the worker's lower priority, on models the worker loads
  once and keeps (crowd.rounds.job.Kit). The app's behaviour before the round became a job.
- `process`: `python -m crowd round-job BUNDLE OUT` in a child process at the worker's lower
  priority: training never holds the app's GIL, and a crash or kill of the child fails the job
  visibly (its log's tail on the organizer page) instead of the app. The child dies with the
  app (PR_SET_PDEATHSIG); after a restart a new one resumes from what OUT holds.
- `hf-jobs` (crowd.rounds.hf_jobs): the same command in a Hugging Face Job on a rented GPU.

The worker drives every runner the same way (crowd.rounds.engine): start, poll until finished
or failed while relaying the job's progress file, cancel when the organizer cancels.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from crowd.rounds.bundle import Bundle
from crowd.rounds.job import Kit, run_round_job
from crowd.rounds.progress import Reporter
from crowd.rounds.results import PROGRESS
from crowd.training.data import TrainingCancelled

LOG = "job.log"  # the child's output, in OUT
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a child gets when its parent thread ends
LOG_TAIL_CHARS = 4000


def die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def idle_child() -> None:  # runs in the child between fork and exec
    """Die with the parent, and run in Linux's idle scheduling class (SCHED_IDLE, inherited by
    every thread the job starts): the job takes only the CPU the replies leave free, and a
    waking reply preempts it at once. A nice value cannot do that: beside a nice-10 child on
    2 cores, the chat's torch threads still waited on the child's (bench/beside_training.py:
    first-token p95 3.4x idle's, against 1.05x in the idle class; docs/results/serving.md)."""
    die_with_parent()
    if sys.platform.startswith("linux"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


class JobFailed(RuntimeError):
    """The runner could not run the job to its end. `retry`: worth running again (a crash, a
    timeout, a vanished job); False: left for the organizer (a refused flavor, no token)."""

    def __init__(self, message: str, log_tail: str = "", retry: bool = True):
        super().__init__(message)
        self.log_tail, self.retry = log_tail, retry


@dataclass(frozen=True)
class RunState:
    """What a runner says about a job it runs."""

    state: str  # 'running' | 'finished' | 'failed'
    stage: str  # the runner's own word: 'running', 'exited 0', 'RUNNING', 'COMPLETED', ...
    message: str = ""
    running_s: float | None = None  # billed seconds so far (hf-jobs)


class Runner(Protocol):
    name: str
    poll_s: float  # how often the worker asks

    @property
    def flavor(self) -> str | None:
        """hf-jobs: the hardware it rents; None on this machine."""
        ...

    def start(self, bundle: Bundle, out: Path, previous: str | None) -> str:
        """Start the job of `bundle` into `out` (or pick up `previous`, the handle a run
        before a restart got, where it still runs); returns its handle. JobFailed if it
        cannot start."""
        ...

    def poll(self, handle: str) -> RunState: ...

    def progress(self, handle: str, out: Path) -> dict:
        """The job's latest progress record ({} before the first)."""
        ...

    def results(self, handle: str, out: Path) -> Path:
        """The local folder holding the finished job's OUT."""
        ...

    def cancel(self, handle: str) -> None: ...

    def logs(self, handle: str, out: Path) -> str: ...


def read_progress(out: Path) -> dict:
    try:
        value = json.loads((out / PROGRESS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


class ThreadRunner:
    """Runs the job in a thread of the app; the thread, and the torch threads it made, end
    with the job (crowd/threads.py, rule 1). Started from the worker's job thread, it inherits
    that thread's lowered priority (Linux: a new thread starts at its creator's nice value)."""

    name, poll_s = "thread", 0.5
    flavor: str | None = None

    def __init__(self, kit_for: Callable[[Bundle | None], Kit]):
        self.kit_for = kit_for
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._error: BaseException | None = None

    def start(self, bundle: Bundle, out: Path, previous: str | None) -> str:
        self._cancel.clear()
        self._error = None

        def work() -> None:
            try:
                report = Reporter(out, lambda: not self._cancel.is_set())
                run_round_job(bundle, out, self.kit_for(bundle), report)
            except BaseException as exc:  # handed to poll()
                self._error = exc

        self._thread = threading.Thread(target=work, name="round-job", daemon=True)
        self._thread.start()
        return "thread"

    def poll(self, handle: str) -> RunState:
        if self._thread is not None and self._thread.is_alive():
            return RunState("running", "running")
        if isinstance(self._error, TrainingCancelled):
            raise self._error
        if self._error is not None:
            raise self._error  # the engine's own errors (a bad bundle) keep their type
        return RunState("finished", "finished")

    def progress(self, handle: str, out: Path) -> dict:
        return read_progress(out)

    def results(self, handle: str, out: Path) -> Path:
        return out

    def cancel(self, handle: str) -> None:
        """Stop at the next step (or stage) and wait for the thread: the kit's models are
        free again when this returns."""
        self._cancel.set()
        if self._thread is not None:
            self._thread.join()

    def logs(self, handle: str, out: Path) -> str:
        return ""


class ProcessRunner:
    """`python -m crowd round-job BUNDLE OUT` in a child process. Forked from the worker's job
    thread, the child starts at that thread's lowered priority (CROWD_WORKER_NICE), and it is
    told to die with that thread (PR_SET_PDEATHSIG), which lives until the job ends. With
    `idle_class` (CROWD_JOB_IDLE_CLASS, the default) it runs in the idle scheduling class
    instead of at a nice value (`idle_child`)."""

    name, poll_s = "process", 0.5
    flavor: str | None = None

    def __init__(self, env: dict[str, str] | None = None, idle_class: bool = True):
        self.env, self.idle_class = env, idle_class
        self._children: dict[str, subprocess.Popen] = {}

    def command(self, bundle: Bundle, out: Path) -> list[str]:
        return [sys.executable, "-m", "crowd", "round-job", str(bundle.folder), str(out)]

    def start(self, bundle: Bundle, out: Path, previous: str | None) -> str:
        """A new child: one started before a restart died with the app (PR_SET_PDEATHSIG)."""
        out.mkdir(parents=True, exist_ok=True)
        with open(out / LOG, "ab") as log:
            child = subprocess.Popen(
                [*self.command(bundle, out), "--hash", bundle.hash],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(self.env),
                preexec_fn=idle_child if self.idle_class else die_with_parent,
            )
        self._children[str(child.pid)] = child
        return str(child.pid)

    def poll(self, handle: str) -> RunState:
        child = self._children.get(handle)
        if child is None:
            return RunState("failed", "gone", "the round-job process is gone (the app restarted)")
        status = child.poll()
        if status is None:
            return RunState("running", "running")
        self._children.pop(handle, None)
        if status == 0:
            return RunState("finished", "exited 0")
        why = (
            f"was killed by {signal.Signals(-status).name}"
            if status < 0
            else f"exited with status {status}"
        )
        return RunState("failed", f"exited {status}", f"the round-job process {why}")

    def progress(self, handle: str, out: Path) -> dict:
        return read_progress(out)

    def results(self, handle: str, out: Path) -> Path:
        return out

    def cancel(self, handle: str) -> None:
        child = self._children.pop(handle, None)
        if child is None:
            return
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def logs(self, handle: str, out: Path) -> str:
        try:
            return (out / LOG).read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return ""


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The app's environment for a round job on this machine: this very code first on the path
    (not whichever copy is installed), and as many torch threads as the app uses, so a round
    gives the same numbers whether it runs in a thread or in a child."""
    import torch

    import crowd

    root = str(Path(crowd.__file__).resolve().parent.parent)
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("CROWD_THREADS", str(torch.get_num_threads()))
    return env
