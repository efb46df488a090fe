"""Runner `hf-jobs`: each round trains and is judged in a Hugging Face Job on a rented GPU
(`huggingface_hub.run_job`), running the Space's own image, billed by the minute.

Bundles and results travel through a **storage bucket**, the campaign's storage (the one its
replica lives in): the job mounts it as a volume and reads its bundle and writes its OUT as plain
files, and the app sees the same bucket as a folder (the Space's bucket mount). A private Hub
dataset repo was the other choice; it is worse here: a repo is mounted read-only, so the job
would need a write token and an upload of every result, and every round's adapters would stay
in the repo's git history for good, while a bucket holds plain files that can be overwritten and
deleted. A bucket mount uploads a file when it is closed and may show it late; the job waits for
its bundle (`round-job --wait-s`), the worker for the results, and both check every file's hash.
The transport is the small `JobStore` protocol, so another store (an S3 bucket) is one class.

The worker polls the job (`inspect_job`), relays its progress file, fetches its logs when it
fails (`fetch_job_logs`), cancels it when the organizer cancels the round (`cancel_job`), and
after an app restart picks up a job that still runs rather than starting another.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Protocol

from crowd.rounds.bundle import Bundle, BundleError, read_bundle
from crowd.rounds.results import RESULTS
from crowd.rounds.runners import LOG_TAIL_CHARS, JobFailed, RunState, read_progress

log = logging.getLogger(__name__)

MOUNT = "/crowd-jobs"  # where the job sees the bucket's PREFIX folder
PREFIX = "round-jobs"  # the bucket's folder for bundles/ and results/
RESULTS_GRACE_S = 60.0  # a finished job's results.json may reach the app's mount this late
BUNDLE_WAIT_S = 120  # ... and its bundle the job's mount
LOG_LINES = 80

PRICES_USD_PER_HOUR = {
    "cpu-basic": 0.01,
    "cpu-upgrade": 0.03,
    "cpu-xl": 1.00,
    "cpu-performance": 1.90,
    "t4-small": 0.40,
    "t4-medium": 0.60,
    "l4x1": 0.80,
    "l4x4": 3.80,
    "l40sx1": 1.80,
    "l40sx4": 8.30,
    "l40sx8": 23.50,
    "a10g-small": 1.00,
    "a10g-large": 1.50,
    "a10g-largex2": 3.00,
    "a10g-largex4": 5.00,
    "a100-large": 2.50,
    "a100x4": 10.00,
    "a100x8": 20.00,
    "h200": 5.00,
    "h200x2": 10.00,
    "h200x4": 20.00,
    "h200x8": 40.00,
    "rtx-pro-6000": 2.75,
    "rtx-pro-6000x2": 5.50,
    "rtx-pro-6000x4": 11.00,
    "rtx-pro-6000x8": 22.00,
}
"""Hourly price of each Jobs flavor in USD, billed by the minute while the job starts or runs.
Source: hub-docs `docs/hub/jobs-pricing.md` (commit 0b8c07f, read 2026-12-07); `hf jobs
hardware` gives the live list."""


def cost_usd(flavor: str | None, running_s: float | None) -> float | None:
    """What a job has cost so far: its billed minutes (rounded up) times the flavor's price."""
    price = PRICES_USD_PER_HOUR.get(flavor or "")
    if price is None or running_s is None:
        return None
    return -(-running_s // 60) * price / 60


class JobsApi(Protocol):
    """The part of `huggingface_hub.HfApi` (2.4.0) a round job uses."""

    def run_job(
        self,
        *,
        image: str,
        command: list[str],
        env: dict[str, Any] | None = None,
        secrets: dict[str, Any] | None = None,
        flavor: str | None = None,
        timeout: int | None = None,
        labels: dict[str, str] | None = None,
        volumes: list[Any] | None = None,
    ) -> Any: ...

    def inspect_job(self, *, job_id: str) -> Any: ...

    def fetch_job_logs(self, *, job_id: str, tail: int | None = None) -> Any: ...

    def cancel_job(self, *, job_id: str) -> None: ...


class JobStore(Protocol):
    """Where bundles and results travel between the app and the job."""

    def put_bundle(self, bundle: Bundle) -> str:
        """Make the bundle available to jobs; returns its path as a job sees it."""
        ...

    def job_out(self, name: str) -> str:
        """The OUT folder `name` as a job sees it."""
        ...

    def progress(self, name: str) -> dict: ...

    def fetch(self, name: str) -> Path:
        """A local folder holding OUT `name` once the job has finished."""
        ...

    def volumes(self) -> list: ...


class BucketFolder:
    """A storage bucket the app sees at `root` (its mount); round jobs use its folder PREFIX
    only, which a job sees mounted at MOUNT (the rest of the bucket, the database's replica,
    stays out of the job's reach)."""

    def __init__(self, bucket: str, root: Path):
        self.bucket, self.root = bucket, Path(root) / PREFIX

    def put_bundle(self, bundle: Bundle) -> str:
        """Copy the bundle into the bucket, unless a whole, unchanged copy is there already."""
        target = self.root / "bundles" / bundle.hash
        try:
            read_bundle(target, bundle.hash)
        except BundleError:
            partial = target.with_name(f".{bundle.hash}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(bundle.folder, partial)
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
        return f"{MOUNT}/bundles/{bundle.hash}"

    def job_out(self, name: str) -> str:
        return f"{MOUNT}/results/{name}"

    def progress(self, name: str) -> dict:
        return read_progress(self.root / "results" / name)

    def fetch(self, name: str) -> Path:
        out = self.root / "results" / name
        deadline = time.monotonic() + RESULTS_GRACE_S
        while not (out / RESULTS).is_file() and time.monotonic() < deadline:
            time.sleep(2.0)
        return out

    def volumes(self) -> list:
        from huggingface_hub import Volume

        return [Volume(type="bucket", source=self.bucket, mount_path=MOUNT, path=PREFIX)]


class HFJobsRunner:
    name, poll_s = "hf-jobs", 10.0
    bundle_wait_s = BUNDLE_WAIT_S

    def __init__(
        self,
        api: JobsApi | None,
        store: JobStore | None,
        *,
        flavor: str,
        image: str | None,
        timeout_s: int,
        token: str | None,
        problem: str | None = None,
    ):
        self.api, self.store, self.flavor, self.image = api, store, flavor, image
        self.timeout_s, self.token = timeout_s, token
        self.problem = problem  # what is missing from the settings, said when a job starts

    def start(self, bundle: Bundle, out: Path, previous: str | None) -> str:
        if previous and self._still_usable(previous):
            log.info(
                "picking up Hugging Face Job %s for round %s", previous, bundle.round["number"]
            )
            return previous
        api, store, image = self._ready()
        command = ["python", "-m", "crowd", "round-job", store.put_bundle(bundle)]
        command += [store.job_out(out.name), "--hash", bundle.hash]
        command += ["--wait-s", str(self.bundle_wait_s)]
        try:
            info = api.run_job(
                image=image,
                command=command,
                env={"PYTHONUNBUFFERED": "1", "CROWD_DEVICE": "auto"},
                secrets={"HF_TOKEN": self.token},  # a gated base model needs it
                flavor=self.flavor,
                timeout=self.timeout_s,
                volumes=store.volumes(),
                labels={"crowd-sft": "round", "round": str(bundle.round["id"])},
            )
        except Exception as exc:
            raise _refused(exc, self.flavor) from exc
        log.info(
            "Hugging Face Job %s runs round %s on %s", info.id, bundle.round["number"], self.flavor
        )
        return str(info.id)

    def _ready(self) -> tuple[JobsApi, JobStore, str]:
        """The Jobs API, the bucket and the image, or JobFailed saying what the settings lack
        (a job that started has all three)."""
        if self.problem or self.api is None or self.store is None or self.image is None:
            raise JobFailed(f"hf-jobs cannot start: {self.problem or 'no image'}", retry=False)
        return self.api, self.store, self.image

    def _still_usable(self, job_id: str) -> bool:
        """A job started before a restart that still runs (or finished well): keep it."""
        if self.api is None:
            return False
        try:
            stage = str(self.api.inspect_job(job_id=job_id).status.stage)
        except Exception:
            return False
        return _stage(stage) in ("running", "finished")

    def poll(self, handle: str) -> RunState:
        api, _, _ = self._ready()
        try:
            info = api.inspect_job(job_id=handle)
        except Exception as exc:
            if _status_code(exc) == 404:
                return RunState("failed", "DELETED", f"the Hugging Face Job {handle} vanished")
            log.warning("cannot reach the Jobs service (%s); asking again", exc)
            return RunState("running", "unreachable")
        stage = str(getattr(info.status.stage, "value", info.status.stage))
        durations = getattr(info, "durations", None)
        running = getattr(durations, "running_secs", None)
        state = _stage(stage)
        message = info.status.message or ""
        if state == "failed":
            message = {
                "CANCELED": f"the Hugging Face Job {handle} was cancelled on the Hub",
                "DELETED": f"the Hugging Face Job {handle} vanished (deleted on the Hub)",
            }.get(stage, f"the Hugging Face Job {handle} failed: {message or stage}")
        return RunState(state, stage, message, float(running) if running is not None else None)

    def progress(self, handle: str, out: Path) -> dict:
        return self.store.progress(out.name) if self.store else {}

    def results(self, handle: str, out: Path) -> Path:
        _, store, _ = self._ready()
        return store.fetch(out.name)

    def cancel(self, handle: str) -> None:
        try:
            self._ready()[0].cancel_job(job_id=handle)
        except Exception as exc:  # it may have ended meanwhile; say so and go on
            log.warning("cancelling Hugging Face Job %s: %s", handle, exc)

    def logs(self, handle: str, out: Path) -> str:
        try:
            api, _, _ = self._ready()
            lines = list(api.fetch_job_logs(job_id=handle, tail=LOG_LINES))
        except Exception as exc:
            return f"(its logs could not be fetched: {exc})"
        return "\n".join(lines)[-LOG_TAIL_CHARS:]


def _stage(stage: str) -> str:
    if stage == "COMPLETED":
        return "finished"
    if stage in ("ERROR", "CANCELED", "DELETED"):
        return "failed"
    return "running"  # SCHEDULING, RUNNING, and anything newer


def _status_code(exc: Exception) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def _refused(exc: Exception, flavor: str) -> JobFailed:
    """A failed run_job as the organizer should read it: a refusal (no access to the flavor,
    no credit, a bad token) is left for them; a network error or a 5xx is retried."""
    code = _status_code(exc)
    if code is not None and 400 <= code < 500:
        return JobFailed(
            f"the Jobs service refused to start the round on flavor {flavor!r} (HTTP {code}): "
            f"{exc}. Check that the token may run Jobs, that the account or organisation has "
            "credit, and that it may use this flavor (CROWD_JOB_FLAVOR)",
            retry=False,
        )
    return JobFailed(f"the round job could not be started on the Hub: {exc}")


def hf_jobs_runner(settings, api: JobsApi | None = None) -> HFJobsRunner:
    """The runner for `settings`; what is missing (a token, a bucket, an image) is said when a
    round job starts, on the organizer page and in the log, and nothing runs."""
    token = settings.hf_token
    folder = settings.job_dir or (settings.replica if isinstance(settings.replica, Path) else None)
    problem = None
    if not token:
        problem = "it needs a Hugging Face token that may run Jobs: set HF_TOKEN (docs/deploy.md)"
    elif not settings.job_bucket or folder is None:
        problem = (
            "it needs the storage bucket that carries bundles and results (CROWD_JOB_BUCKET) "
            "and where this app sees it mounted (CROWD_JOB_DIR, or CROWD_REPLICA when that is the "
            "bucket's mount: an s3:// replica is not a mount)"
        )
    elif not settings.job_image:
        problem = "it needs the image to run (CROWD_JOB_IMAGE; on a Space: the Space's own)"
    if problem:
        log.error("CROWD_ROUND_RUNNER=hf-jobs: %s", problem)
    if api is None and token:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    store = BucketFolder(settings.job_bucket, folder) if settings.job_bucket and folder else None
    return HFJobsRunner(
        api,
        store,
        flavor=settings.job_flavor,
        image=settings.job_image,
        timeout_s=settings.job_timeout_s,
        token=token,
        problem=problem,
    )
