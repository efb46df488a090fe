"""The round as a job, on the tiny model and real SQLite files: the bundle is the record (later
reviews change nothing about the round), `round-job` works from the bundle alone and resumes
from its OUT, a bad bundle or bad results are refused and nothing is crowned from them, the
`process` runner gives the thread's champion, scores and points, and a killed child is retried."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import tiny_settings

from crowd.campaigns import utcnow
from crowd.config import Settings
from crowd.export import export_dataset
from crowd.limits import Limits
from crowd.organizer import Organizer
from crowd.rounds.bundle import BundleError, check_owner, read_bundle
from crowd.rounds.engine import build_engine
from crowd.rounds.job import build_kit, run_round_job
from crowd.rounds.material import training_material
from crowd.rounds.progress import Reporter, step_text
from crowd.rounds.results import RESULTS, ResultsMismatch, read_results
from crowd.rounds.runners import ThreadRunner
from crowd.rounds.worker import Worker
from crowd.service import CrowdService, context_of
from storage import records, reviews
from storage import rounds as store
from tests.rounds import KEY, crowd_submits, round_row

ROOT = Path(__file__).resolve().parent.parent
PLAIN_LOOP = dict(reviews_on=False, person_cap=1.0)  # the round's mechanics, as test_rounds


def make_world(new_generation, settings: Settings, people: int, each: int, **campaign) -> tuple:
    """(service, organizer, worker, their ids) after `people` volunteers rewrote `each`
    replies (on a generation service from tests/conftest.py's `new_generation`)."""
    generation = new_generation(max_new_tokens=6)
    limits = Limits(chats_per_minute=1000, submissions_per_minute=1000)
    service = CrowdService(settings, generation, limits=limits)
    organizer = Organizer(service)
    organizer.update_campaign(KEY, **campaign)
    try:
        ids = [s.participant_id for s in crowd_submits(service, people=people, each=each)]
    finally:
        generation.close()
    worker = Worker(settings.db_path, lambda: build_engine(settings, utcnow), utcnow)
    return service, organizer, worker, ids


def close_into_bundle(service, organizer, worker) -> dict:
    """Close round 1 and run only its closing stage (bundle and record); returns the claimed job."""
    organizer.close_round(KEY)
    with service.db() as db:
        job = store.claim_job(db, utcnow())
        round_ = store.get_round(db, job["round_id"])
        campaign = store.get_campaign(db, round_["campaign_id"])
    worker.engine._close(campaign, round_)
    assert round_row(service, 1)["state"] == "training"
    return job


def recorded_bundle(service):
    with service.db() as db:
        record = records.bundle_of(db, round_row(service, 1)["id"])
    return read_bundle(service.settings.data_dir / record["path"], record["hash"])


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir, new_generation):
    """A preference round closed into its bundle, and the OUT of its job run to the end in this
    process (the round itself not yet crowned)."""
    tmp = tmp_path_factory.mktemp("finished")
    settings = tiny_settings(tmp / "data", tiny_model_dir, eval_samples=2)
    service, organizer, worker, _ = make_world(
        new_generation, settings, 6, 3, task="preference", min_corrections=2,
        heldout_share=0.34, points_rule="shapley", **PLAIN_LOOP,
    )  # fmt: skip
    job = close_into_bundle(service, organizer, worker)
    bundle = recorded_bundle(service)
    kit = build_kit(bundle.base_model, bundle.training, settings.models_dir, "cpu", bundle.judging)
    out = tmp / "out"
    results = run_round_job(bundle, out, kit, Reporter(out))
    return SimpleNamespace(settings=settings, service=service, worker=worker, job=job,
                           bundle=bundle, kit=kit, out=out, results=results)  # fmt: skip


def copy_of(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


# --- the record ----------------------------------------------------------------------------


def test_reviews_after_the_bundle_change_nothing_about_that_rounds_record_and_points(
    settings, new_generation
):
    service, organizer, worker, ids = make_world(
        new_generation, replace(settings, eval_samples=2), 6, 1, task="preference",
        reviews_on=True, min_reviews=2, person_cap=1.0, min_corrections=1, heldout_share=0.0,
    )  # fmt: skip
    with service.db() as db:
        _, round_ = context_of(db)
        x = db.execute("SELECT id FROM corrections WHERE participant_id = ?", [ids[0]]).fetchone()[
            0
        ]
        for reviewer in ids[1:3]:  # trusted when the round closes: it trains
            reviews.add_review(db, x, reviewer, "endorse", round_["id"], utcnow())
    job = close_into_bundle(service, organizer, worker)
    with service.db() as db:  # then three more volunteers reject it
        now_open = store.current_round(db, round_["campaign_id"])
        for reviewer in ids[3:6]:
            reviews.add_review(db, x, reviewer, "reject", now_open["id"], utcnow())
        campaign = store.get_campaign(db, round_["campaign_id"])
        assert training_material(db, campaign, round_)[1][ids[0]] == [0, 1], (
            "it would not train now"
        )
    worker.run_job(job)
    with service.db() as db:
        assert store.get_round(db, round_["id"])["state"] == "done"
        trained = [r["correction_id"] for r in records.material(db, round_["id"], "train")]
        usage = records.usage(db, round_["id"])
        ledger = [{**r, "reason": json.loads(r["reason"])} for r in store.points_for_round(db, round_["id"])]  # fmt: skip
    assert x in trained and usage[ids[0]] == [1, 0]
    # The endorsers agreed with the verdict as it stood when the bundle was written.
    assert {r["participant_id"] for r in ledger if r["rule"] == "review"} == set(ids[1:3])
    for row in ledger:
        if row["rule"] != "review" and row["participant_id"] == ids[0]:
            assert row["reason"]["corrections_used"] == 1
    export = settings.data_dir.parent / "export"
    export_dataset(settings.db_path, export)
    events = [json.loads(line) for line in (export / "events.jsonl").read_text().splitlines()]
    assert next(e for e in events if e["correction_id"] == x)["used"] is True


# --- the job and its OUT -------------------------------------------------------------------


def test_the_job_resumes_from_what_out_holds(finished, tmp_path):
    out = copy_of(finished.out, tmp_path / "out")
    kept = {n: (out / "candidates" / n / "adapter_model.safetensors").stat().st_mtime_ns
            for n in ("g0", "g2")}  # fmt: skip
    shutil.rmtree(out / "candidates" / "g1")
    (out / "candidates" / "g1.json").unlink()
    (out / RESULTS).unlink()
    again = run_round_job(finished.bundle, out, finished.kit, Reporter(out))
    for name, stamp in kept.items():  # trained before: not trained again
        assert (out / "candidates" / name / "adapter_model.safetensors").stat().st_mtime_ns == stamp
    assert again.scores == finished.results.scores and again.best == finished.results.best
    stamp = (out / RESULTS).stat().st_mtime_ns
    run_round_job(finished.bundle, out, finished.kit, Reporter(out))  # finished: nothing to do
    assert (out / RESULTS).stat().st_mtime_ns == stamp


def test_a_bad_bundle_is_refused_naming_what_is_wrong(finished, tmp_path):
    bundle = finished.bundle
    changed = copy_of(bundle.root, tmp_path / "changed" / bundle.hash)
    with open(changed / "groups" / "g0.jsonl", "a") as handle:
        handle.write('{"correction_id": 999, "sft": null, "pair": null}\n')
    with pytest.raises(BundleError, match="g0.jsonl does not match its hash"):
        read_bundle(changed)
    missing = copy_of(bundle.root, tmp_path / "missing" / bundle.hash)
    (missing / "showcase.json").unlink()
    with pytest.raises(BundleError, match="missing the file showcase.json"):
        read_bundle(missing)
    with pytest.raises(BundleError, match="wrong hash"):
        read_bundle(bundle.root, "0" * 64)
    with pytest.raises(BundleError, match="belongs to round 1 of campaign"):
        check_owner(
            bundle, bundle.campaign["database_id"], bundle.campaign["id"] + 1, bundle.round["id"]
        )
    # The command line says so too, and exits 2 before it loads a model.
    done = subprocess.run(
        [sys.executable, "-m", "crowd", "round-job", str(changed), str(tmp_path / "out")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and "does not match its hash" in done.stderr
    assert not (tmp_path / "out").exists()


def test_out_of_another_bundle_and_results_that_do_not_match_are_refused(finished, tmp_path):
    bundle, results = finished.bundle, finished.results
    other = copy_of(finished.out, tmp_path / "other")
    (other / "bundle.txt").write_text("f" * 64 + "\n")
    with pytest.raises(BundleError, match="holds the job of bundle ffffffffffff"):
        run_round_job(bundle, other, finished.kit, Reporter(other))

    def tampered(name: str, change) -> Path:
        out = copy_of(finished.out, tmp_path / name)
        raw = json.loads((out / RESULTS).read_text())
        change(raw, out)
        (out / RESULTS).write_text(json.dumps(raw))
        return out

    worst = min(results.scores, key=lambda n: results.scores[n].oriented)
    cases = {
        "for bundle": lambda raw, out: raw.update(bundle="0" * 64),
        "does not follow from its scores": lambda raw, out: raw["scores"][worst].update(value=9.0),
        "contributions valued are not": lambda raw, out: raw["contributions"].popitem(),
        "adapter file adapter_model.safetensors is missing": lambda raw, out: (
            out / "candidates" / "g0" / "adapter_model.safetensors"
        ).unlink(),
        "cover candidates": lambda raw, out: raw["trained"].pop("g1"),
    }
    for message, change in cases.items():
        with pytest.raises(ResultsMismatch, match=message):
            read_results(tampered(message.replace(" ", "-"), change), bundle)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ResultsMismatch, match="did not finish"):
        read_results(empty, bundle)


def test_a_damaged_bundle_fails_the_job_for_the_organizer_and_crowns_nothing(
    settings, new_generation
):
    service, organizer, worker, _ = make_world(
        new_generation, settings, 3, 1, task="preference", **PLAIN_LOOP
    )
    job = close_into_bundle(service, organizer, worker)
    bundle = recorded_bundle(service)
    (bundle.root / "judging.json").write_text("{}")
    worker.run_job(job)
    with service.db() as db:
        failed = store.get_job(db, job["id"])
        assert db.table("evaluations").count == 0 and db.table("points").count == 0
    assert (
        failed["status"] == "failed" and "judging.json does not match its hash" in failed["error"]
    )
    assert round_row(service, 1)["state"] == "training"  # left for the organizer


class LossyThreadRunner(ThreadRunner):
    """The thread runner over a store that loses a file of the results on the way back."""

    def results(self, handle: str, out: Path) -> Path:
        (out / "candidates" / "g0" / "adapter_model.safetensors").unlink()
        return out


def test_results_that_do_not_match_the_bundle_crown_nothing_and_the_job_is_retried(finished):
    out = finished.worker.engine.out_dir({"id": finished.job["round_id"]})
    shutil.copytree(finished.out, out)
    engine = replace(finished.worker.engine, runner=LossyThreadRunner(lambda _b: finished.kit))
    Worker(finished.settings.db_path, lambda: engine, utcnow).run_job(finished.job)
    with finished.service.db() as db:
        job = store.get_job(db, finished.job["id"])
        assert db.table("evaluations").count == 0 and db.table("points").count == 0
    assert job["status"] == "pending" and job["failures"] == 1
    assert "g0's adapter file adapter_model.safetensors is missing" in job["error"]
    assert round_row(finished.service, 1)["state"] != "done" and not out.exists()
    assert list(out.parent.glob(f"{out.name}.rejected-*")), "set aside for the retry"


# --- the process runner --------------------------------------------------------------------


def test_the_process_runner_gives_the_threads_champion_scores_and_points(finished, tmp_path):
    """The same bundle crowned twice: from the job run in this process (what the thread runner
    runs), and from `round-job` in a child process, into a copy of the database."""
    data = finished.settings.data_dir
    other = tmp_path / "data"
    other.mkdir()
    for name in ("bundles", "adapters"):
        if (data / name).exists():
            shutil.copytree(data / name, other / name)
    with sqlite3.connect(data / "crowd.db") as src, sqlite3.connect(other / "crowd.db") as dst:
        src.backup(dst)
    shutil.copytree(finished.out, data / "round-jobs" / f"r{finished.job['round_id']}")
    finished.worker.run_job(finished.job)  # crowns from the in-process job's OUT
    # At a nice value, not in the idle class: the numbers do not depend on it, and an idle-class
    # child crawls on a machine busy with anything else (the next test checks the class).
    child = replace(finished.settings, data_dir=other, round_runner="process", job_idle_class=False)
    Worker(child.db_path, lambda: build_engine(child, utcnow), utcnow).run_job(finished.job)
    outcomes = [outcome(path / "crowd.db") for path in (data, other)]
    assert outcomes[0]["round"]["state"] == "done" and outcomes[0]["evaluations"]
    assert outcomes[0] == outcomes[1]


def outcome(db_path: Path) -> dict:
    with sqlite3.connect(db_path) as db:
        db.row_factory = sqlite3.Row
        rows = lambda sql: [dict(r) for r in db.execute(sql)]  # noqa: E731
        return {
            "round": rows("SELECT state, improved, winner_id FROM rounds WHERE number = 1")[0],
            "evaluations": rows("SELECT model_version_id, value, loss, n_items, detail FROM "
                                "evaluations ORDER BY model_version_id"),
            "points": rows("SELECT participant_id, amount, rule, reason FROM points ORDER BY id"),
            "job": rows("SELECT status, error FROM jobs")[0],
        }  # fmt: skip


@pytest.mark.alone  # an idle-class child waits for every busy core: beside another test it starves
def test_a_killed_round_job_process_fails_visibly_and_is_retried(settings, new_generation):
    """While it trains, the child and every thread it started are in the idle scheduling class
    (CROWD_JOB_IDLE_CLASS), so the replies preempt it; killed, it fails visibly, and the
    retry resumes from what OUT holds."""
    settings = replace(settings, round_runner="process", eval_samples=2,
                       training=replace(settings.training, epochs=10, batch_size=1))  # fmt: skip
    service, organizer, worker, _ = make_world(
        new_generation,
        settings,
        3,
        2,
        task="preference",
        min_corrections=1,
        heldout_share=0.0,
        **PLAIN_LOOP,
    )
    job_id = organizer.close_round(KEY)
    thread = threading.Thread(target=worker.step)
    thread.start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # until the child is training
        job = next(j for j in organizer.jobs(KEY) if j["id"] == job_id)
        if job["progress"].get("step", 0) >= 2:
            break
        time.sleep(0.2)
    # In the idle class the child runs only on CPU time nothing else wants: on a machine that
    # other work keeps busy it may not have started in 180 s (and so has written no log).
    assert job["progress"].get("step", 0) >= 2, f"the child did not train in 180 s: {job}"
    child = int(job["external_id"])
    threads = [int(t) for t in os.listdir(f"/proc/{child}/task")]
    assert len(threads) > 1 and {os.sched_getscheduler(t) for t in threads} == {os.SCHED_IDLE}
    os.kill(child, signal.SIGKILL)
    thread.join(120)
    with service.db() as db:
        killed = store.get_job(db, job_id)
    assert killed["status"] == "pending" and killed["failures"] == 1
    assert "killed by SIGKILL" in killed["error"] and killed["log_tail"] is not None
    assert round_row(service, 1)["state"] == "training"
    assert worker.step()  # the retry goes on from what OUT holds
    with service.db() as db:
        assert store.get_job(db, job_id)["status"] == "finished"
    assert round_row(service, 1)["state"] == "done"


def test_a_new_stage_drops_the_last_stages_step_and_estimate(tmp_path):
    report = Reporter(tmp_path)
    report({"stage": "training group 0", "groups_done": 0}, force=True)
    report({"group": 0, "step": 4, "steps": 4, "loss": 0.5, "eta_s": 0.0}, force=True)
    stepped = json.loads((tmp_path / "progress.json").read_text())
    assert step_text(stepped) == "step 4/4 loss 0.500"  # the demo's and the studies' lines
    report({"stage": "training group 1", "groups_done": 1}, force=True)
    written = json.loads((tmp_path / "progress.json").read_text())
    assert written == {"stage": "training group 1", "groups_done": 1} and step_text(written) == ""
    report({"judged": 1, "models": 4, "eta_s": 3.0}, force=True)  # no new stage: merged
    assert json.loads((tmp_path / "progress.json").read_text())["eta_s"] == 3.0
