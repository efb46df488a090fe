"""The `hf-jobs` runner against a Jobs service on this machine (tests/fake_jobs.py: the same four
calls as huggingface_hub 2.4.0, each job's command really run in a subprocess, the storage
bucket a local folder): a round trains and is crowned through it and is picked up after an app
restart; a missing token or a refused flavor is left for the organizer; a job that times out or
vanishes is retried with its logs shown, then left for the organizer; a cancelled round cancels
its job. Never the real service."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from fake_jobs import FakeJobs
from test_round_job import PLAIN_LOOP, make_world

from crowd.campaigns import utcnow
from crowd.rounds.engine import build_engine
from crowd.rounds.hf_jobs import HFJobsRunner
from crowd.rounds.worker import Worker
from crowd.ui.organizer import runner_text
from storage import rounds as store
from tests.rounds import KEY, round_row

BUCKET = "organizer/crowd-sft-jobs"


@pytest.fixture
def hub(settings, tmp_path):
    """(settings for hf-jobs, the fake service); its jobs are stopped at the end."""
    (tmp_path / "bucket").mkdir()
    (tmp_path / "jobs").mkdir()
    fake = FakeJobs({BUCKET: tmp_path / "bucket"}, tmp_path / "jobs")
    settings = replace(
        settings,
        round_runner="hf-jobs",
        hf_token="hf_test_token",
        job_bucket=BUCKET,
        job_dir=tmp_path / "bucket",
        job_image="hf.co/spaces/organizer/crowd-sft",
        job_flavor="t4-small",
        eval_samples=2,
    )
    yield settings, fake
    fake.close()


def hf_worker(settings, fake, runner_class=HFJobsRunner) -> Worker:
    """A worker whose engine's runner (of `runner_class`) talks to `fake` and asks often."""

    def engine():
        built = build_engine(settings, utcnow, jobs_api=fake)
        r = built.runner
        runner = runner_class(
            r.api, r.store, flavor=r.flavor, image=r.image, timeout_s=r.timeout_s,
            token=r.token, problem=r.problem,
        )  # fmt: skip
        runner.poll_s, runner.bundle_wait_s = 0.2, 1
        return replace(built, runner=runner)

    return Worker(settings.db_path, engine, utcnow)


def job_row(service, job_id: int) -> dict:
    with service.db() as db:
        return store.get_job(db, job_id)


class AppDies(HFJobsRunner):
    """The app is killed while its job runs on the Hub: the first poll never returns."""

    def poll(self, handle: str):
        raise KeyboardInterrupt("the app was killed")


def test_a_round_runs_on_hugging_face_jobs_and_is_picked_up_after_a_restart(hub, new_generation):
    settings, fake = hub
    service, organizer, _, _ = make_world(
        new_generation, settings, 6, 2, task="preference", min_corrections=2,
        heldout_share=0.34, **PLAIN_LOOP,
    )  # fmt: skip
    job_id = organizer.close_round(KEY)
    with pytest.raises(KeyboardInterrupt):
        hf_worker(settings, fake, AppDies).step()
    started = job_row(service, job_id)
    assert started["status"] == "running" and started["external_id"] in fake.jobs
    assert (started["runner"], started["flavor"]) == ("hf-jobs", "t4-small")
    restarted = hf_worker(settings, fake)  # re-queues the running job, then picks up its Hub job
    assert restarted.step()
    done = job_row(service, job_id)
    assert done["status"] == "finished", done["error"]
    assert fake.calls.count("run_job") == 1 and done["external_id"] == started["external_id"]
    assert done["runner_stage"] == "COMPLETED" and done["running_s"] is not None
    round_1 = round_row(service, 1)
    assert round_1["state"] == "done"
    with service.db() as db:
        assert db.table("evaluations").count_where("round_id = ?", [round_1["id"]]) >= 2
    text = runner_text(organizer.runner_status(KEY))
    assert "on Hugging Face Jobs" in text and "`t4-small` ($0.40 an hour" in text
    assert f"round job** {job_id}: finished" in text and "$0.01 so far" in text


def test_no_token_or_a_refused_flavor_is_left_for_the_organizer(hub, new_generation):
    settings, fake = hub
    service, organizer, _, _ = make_world(
        new_generation, settings, 3, 1, task="preference", **PLAIN_LOOP
    )
    job_id = organizer.close_round(KEY)
    assert hf_worker(replace(settings, hf_token=None), fake).step()
    failed = job_row(service, job_id)
    assert failed["status"] == "failed" and "needs a Hugging Face token" in failed["error"]
    retry = organizer.retry_job(KEY, job_id)
    assert hf_worker(replace(settings, job_flavor="a100-large"), fake).step()
    refused = job_row(service, retry)
    assert refused["status"] == "failed" and "flavor 'a100-large' (HTTP 402)" in refused["error"]
    assert fake.calls.count("run_job") == 1 and not fake.jobs  # asked once, nothing started
    assert round_row(service, 1)["state"] == "training"
    assert "flavor 'a100-large'" in runner_text(organizer.runner_status(KEY))


def test_a_job_that_times_out_or_vanishes_is_retried_then_left_with_its_logs(hub, new_generation):
    settings, fake = hub
    service, organizer, _, _ = make_world(
        new_generation, settings, 3, 1, task="preference", **PLAIN_LOOP
    )
    job_id = organizer.close_round(KEY)
    # Stopped by the service after 5 s: it has said which bundle it runs, not trained yet.
    assert hf_worker(replace(settings, job_timeout_s=5), fake).step()
    first = job_row(service, job_id)
    assert first["status"] == "pending" and first["failures"] == 1
    assert "attempt 1 failed" in first["error"] and "Job timeout" in first["error"]
    assert "round-job: bundle" in first["log_tail"]
    shown = runner_text(organizer.runner_status(KEY))
    assert "Job timeout" in shown and "The end of its log:\n```\nround-job: bundle" in shown
    vanish = threading.Thread(target=lambda: fake_vanishes_a_job(fake, 2))
    vanish.start()
    assert hf_worker(replace(settings, job_timeout_s=600), fake).step()
    vanish.join()
    second = job_row(service, job_id)
    assert second["status"] == "pending" and "vanished" in second["error"]
    assert hf_worker(replace(settings, job_timeout_s=1), fake).step()
    last = job_row(service, job_id)
    assert last["status"] == "failed" and last["failures"] == 3 and "Job timeout" in last["error"]
    # Left for the organizer where the last attempt got to: a resumed attempt may reach judging
    # (the round's 'evaluating') before its timeout. Nothing is crowned either way.
    assert round_row(service, 1)["state"] in ("training", "evaluating")
    with service.db() as db:
        assert (
            db.table("evaluations").count == 0 and db.table("model_versions").count == 1
        )  # nothing crowned


def fake_vanishes_a_job(fake: FakeJobs, nth: int) -> None:
    """Delete the `nth` job on the Hub as soon as it exists."""
    deadline = time.monotonic() + 120
    while len(fake.jobs) < nth:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    fake.vanish(list(fake.jobs)[-1])


def test_cancelling_the_round_cancels_its_job_on_the_hub(hub, new_generation):
    settings, fake = hub
    service, organizer, _, _ = make_world(
        new_generation, settings, 3, 1, task="preference", **PLAIN_LOOP
    )
    job_id = organizer.close_round(KEY)
    thread = threading.Thread(target=hf_worker(settings, fake).step)
    thread.start()
    deadline = time.monotonic() + 60
    while not fake.jobs:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    organizer.cancel_job(KEY, job_id)
    thread.join(60)
    assert "cancel_job" in fake.calls
    assert next(iter(fake.jobs.values())).stage == "CANCELED"
    assert job_row(service, job_id)["status"] == "cancelled"
    assert round_row(service, 1)["state"] == "training"
