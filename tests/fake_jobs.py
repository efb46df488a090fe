"""A Hugging Face Jobs service on this machine, for tests: the four calls of huggingface_hub
2.4.0's HfApi that the `hf-jobs` runner makes (run_job, inspect_job, fetch_job_logs,
cancel_job), with the same keyword arguments, returning huggingface_hub's own JobInfo and raising
its HfHubHTTPError. Each job's command really runs, in a subprocess; a bucket volume is a local
folder, and the command's paths under the volume's mount path are read there (what mounting the
bucket does). A job runs on the flavors the account may use, until its timeout."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx2
from huggingface_hub import JobInfo
from huggingface_hub.errors import HfHubHTTPError

ROOT = Path(__file__).resolve().parent.parent


def http_error(code: int, message: str) -> HfHubHTTPError:
    request = httpx2.Request("POST", "https://huggingface.co/api/jobs/fake")
    return HfHubHTTPError(f"{code}: {message}", response=httpx2.Response(code, request=request))


class FakeJob:
    def __init__(self, job_id: str, process: subprocess.Popen, log: Path, flavor: str):
        self.id, self.process, self.log, self.flavor = job_id, process, log, flavor
        self.started = time.monotonic()
        self.stage, self.message = "RUNNING", None
        self.ended: float | None = None


class FakeJobs:
    def __init__(self, buckets: dict[str, Path], work: Path, flavors=("cpu-basic", "t4-small")):
        self.buckets, self.work, self.flavors = buckets, work, set(flavors)
        self.jobs: dict[str, FakeJob] = {}
        self.calls: list[str] = []
        self._lock = threading.Lock()

    # --- the protocol ------------------------------------------------------------------------

    def run_job(
        self,
        *,
        image,
        command,
        env=None,
        secrets=None,
        flavor=None,
        timeout=None,
        volumes=None,
        labels=None,
        namespace=None,
        token=None,
        **rest,
    ) -> JobInfo:
        self.calls.append("run_job")
        flavor = flavor or "cpu-basic"
        if flavor not in self.flavors:
            raise http_error(402, f"Payment Required: this account cannot run Jobs on {flavor}")
        mounts = {v.mount_path: self.buckets[v.source] / (v.path or "") for v in volumes or []}
        argv = [self._local(arg, mounts) for arg in command]
        if argv and argv[0] == "python":
            argv[0] = sys.executable
        job_id = uuid.uuid4().hex[:24]
        log = self.work / f"{job_id}.log"
        environment = {**os.environ, **(env or {}), **(secrets or {})}
        environment["PYTHONPATH"] = str(ROOT)  # the image's code: this checkout
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=environment)
        job = FakeJob(job_id, process, log, flavor)
        self.jobs[job_id] = job
        if timeout:
            threading.Thread(target=self._watch, args=(job, float(timeout)), daemon=True).start()
        return self._info(job)

    def inspect_job(self, *, job_id: str, namespace=None, token=None) -> JobInfo:
        self.calls.append("inspect_job")
        job = self.jobs.get(job_id)
        if job is None:
            raise http_error(404, f"Job {job_id} not found")
        self._update(job)
        return self._info(job)

    def fetch_job_logs(self, *, job_id: str, namespace=None, follow=False, tail=None, token=None):
        self.calls.append("fetch_job_logs")
        job = self.jobs.get(job_id)
        if job is None:
            raise http_error(404, f"Job {job_id} not found")
        lines = job.log.read_text(errors="replace").splitlines()
        return iter(lines[-tail:] if tail else lines)

    def cancel_job(self, *, job_id: str, namespace=None, token=None) -> None:
        self.calls.append("cancel_job")
        job = self.jobs.get(job_id)
        if job is None:
            raise http_error(404, f"Job {job_id} not found")
        with self._lock:
            if job.process.poll() is None:
                job.process.kill()
                job.process.wait()
                job.stage, job.ended = "CANCELED", time.monotonic()

    # --- what a test does to the service -----------------------------------------------------

    def vanish(self, job_id: str) -> None:
        """The job is deleted on the Hub (and stops)."""
        job = self.jobs.pop(job_id)
        if job.process.poll() is None:
            job.process.kill()
            job.process.wait()

    def close(self) -> None:
        for job in self.jobs.values():
            if job.process.poll() is None:
                job.process.kill()
                job.process.wait()

    # --- inside ------------------------------------------------------------------------------

    @staticmethod
    def _local(arg: str, mounts: dict[str, Path]) -> str:
        for mount, folder in mounts.items():
            if arg == mount or arg.startswith(mount + "/"):
                return str(folder) + arg[len(mount) :]
        return arg

    def _watch(self, job: FakeJob, timeout: float) -> None:
        while job.process.poll() is None:
            if time.monotonic() - job.started > timeout:
                with self._lock:
                    job.process.kill()
                    job.process.wait()
                    job.stage, job.message, job.ended = "ERROR", "Job timeout", time.monotonic()
                return
            time.sleep(0.1)

    def _update(self, job: FakeJob) -> None:
        with self._lock:
            status = job.process.poll()
            if status is not None and job.stage == "RUNNING":
                job.ended = time.monotonic()
                job.stage = "COMPLETED" if status == 0 else "ERROR"
                job.message = None if status == 0 else f"exit code {status}"

    def _info(self, job: FakeJob) -> JobInfo:
        running = (job.ended or time.monotonic()) - job.started
        return JobInfo(
            id=job.id,
            createdAt=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            flavor=job.flavor,
            owner={"id": "0", "name": "fake-organizer", "type": "user"},
            status={"stage": job.stage, "message": job.message},
            durations={"runningSecs": int(running), "totalSecs": int(running)},
        )
