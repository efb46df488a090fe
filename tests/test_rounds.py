"""A whole round through the service layer and the worker, on the tiny model and real SQLite:
training, judging, crowning, points, cancel and resume."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from crowd.campaigns import utcnow
from crowd.limits import Limits
from crowd.models import load_base
from crowd.organizer import Organizer
from crowd.rounds.engine import build_engine
from crowd.rounds.state import IllegalTransition, advance, check_auto_close
from crowd.rounds.worker import Worker
from crowd.service import CrowdService
from storage import rounds as store
from tests.rounds import ALL_KINDS, JOY, KEY, crowd_submits, round_row, run_round


def test_a_preference_round_trains_judges_crowns_and_awards(round_world, tiny_model_dir):
    service, organizer, worker = round_world
    organizer.update_campaign(
        KEY, task="preference", min_corrections=2, heldout_share=0.34, points_rule="paper"
    )
    crowd_submits(service)
    job = run_round(organizer, worker)
    assert job["status"] == "finished", job["error"]
    done = round_row(service, 1)
    assert done["state"] == "done"
    with service.db() as db:
        candidates = [store.candidate_for(db, done["id"], g) for g in range(3)]
        evaluations = {
            e["model_version_id"]: e
            for e in db.query("SELECT * FROM evaluations WHERE round_id = ?", [done["id"]])
        }
        ledger = store.points_for_round(db, done["id"])
        following = round_row(service, 2)
    # Every candidate and the champion were judged on the same items.
    assert all(c and c["status"] in ("candidate", "champion") for c in candidates)
    assert set(evaluations) == {done["champion_id"], *(c["id"] for c in candidates)}
    assert len({e["n_items"] for e in evaluations.values()}) == 1
    # Learning the chosen replies beats the untrained champion: a winner is crowned...
    assert done["improved"] == 1 and done["winner_id"] != done["champion_id"]
    assert following["champion_id"] == done["winner_id"], "round 2 serves the new champion"
    # ... and its LoRA weights moved while the base stayed put.
    winner = next(c for c in candidates if c["id"] == done["winner_id"])
    weights = load_file(
        service.settings.data_dir / winner["adapter_path"] / "adapter_model.safetensors"
    )
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items())
    base_now = load_file(tiny_model_dir / "model.safetensors")
    base_loaded = load_base(
        str(tiny_model_dir), service.settings.models_dir, "cpu"
    ).model.state_dict()
    assert all(torch.equal(base_now[k], base_loaded[k]) for k in base_now)
    # The paper's rule: group rank r of G gives G - r to each contributing member.
    ranked = sorted(candidates, key=lambda c: evaluations[c["id"]]["value"], reverse=True)
    expected = {c["group_index"]: 3 - r for r, c in enumerate(ranked)}
    assert ledger and all(row["amount"] == expected[row["group_index"]] for row in ledger)


def test_a_round_that_beats_nobody_keeps_the_champion(round_world):
    service, organizer, worker = round_world
    organizer.update_campaign(
        KEY,
        **JOY,
        win_margin=100.0,
    )
    crowd_submits(service)
    job = run_round(organizer, worker)
    assert job["status"] == "finished", job["error"]
    done = round_row(service, 1)
    assert done["improved"] == 0 and done["winner_id"] == done["champion_id"]
    with service.db() as db:
        metrics = list(
            db.query("SELECT metric, value FROM evaluations WHERE round_id = ?", [done["id"]])
        )
        assert store.points_for_round(db, done["id"]) == []  # no improvement, no points
    assert len(metrics) == 4 and all(
        m["metric"] == "emotion_l2" and m["value"] >= 0 for m in metrics
    )
    assert round_row(service, 2)["champion_id"] == done["champion_id"]


def test_a_group_with_too_few_corrections_sits_out(round_world):
    service, organizer, worker = round_world
    organizer.update_campaign(KEY, task="preference", min_corrections=5, heldout_share=0.0)
    crowd_submits(service, people=3, each=2)  # one person per group, two corrections each
    assert run_round(organizer, worker)["status"] == "finished"
    done = round_row(service, 1)
    with service.db() as db:
        assert all(store.candidate_for(db, done["id"], g) is None for g in range(3))
    assert done["improved"] == 0


def test_a_failed_training_fails_its_candidate_and_the_round_goes_on(round_world):
    service, organizer, worker = round_world
    organizer.update_campaign(KEY, task="preference", min_corrections=2, heldout_share=0.34)
    crowd_submits(service)
    # A huge step size makes the second step's loss NaN.
    bad = replace(service.settings.training, learning_rate=1e30, batch_size=1)
    worker._engine_factory = lambda: build_engine(replace(service.settings, training=bad), utcnow)
    assert run_round(organizer, worker)["status"] == "finished"
    done = round_row(service, 1)
    with service.db() as db:
        candidates = [store.candidate_for(db, done["id"], g) for g in range(3)]
    assert all(c["status"] == "failed" and c["error"] for c in candidates)
    assert done["state"] == "done" and done["improved"] == 0


def test_cancel_stops_between_steps_and_retry_resumes(round_world):
    service, organizer, worker = round_world
    organizer.update_campaign(KEY, task="preference", min_corrections=2, heldout_share=0.34)
    crowd_submits(service)
    job_id = organizer.close_round(KEY)
    organizer.cancel_job(KEY, job_id)  # cancelled before the worker got to it
    assert worker.step() is False
    with service.db() as db:
        job = store.claim_job(db, utcnow())
    assert job is None
    retry = organizer.retry_job(KEY, job_id)
    assert worker.step()
    assert next(j for j in organizer.jobs(KEY) if j["id"] == retry)["status"] == "finished"
    assert round_row(service, 1)["state"] == "done"


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own nice value is Linux's")
def test_the_worker_trains_below_the_replies_priority(round_world):
    """CROWD_WORKER_NICE lowers the round's CPU priority, not the app's: a started worker runs
    its round at nice 5, in a thread that ends with the round (crowd/threads.py), while the
    thread that serves replies stays where it was."""
    service, organizer, _ = round_world
    organizer.update_campaign(KEY, task="preference", min_corrections=2, heldout_share=0.34)
    crowd_submits(service)
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    worker = Worker(service.settings.db_path, round_world[2]._engine_factory, utcnow, nice=5)
    worker.start()
    try:
        organizer.close_round(KEY)
        deadline, seen = time.monotonic() + 300, set()
        while round_row(service, 1)["state"] != "done" and time.monotonic() < deadline:
            for thread in threading.enumerate():
                if thread.name == "round-job" and thread.native_id is not None:
                    with contextlib.suppress(OSError):  # it may end between the two lines
                        seen.add(os.getpriority(os.PRIO_PROCESS, thread.native_id))
            time.sleep(0.05)
        assert round_row(service, 1)["state"] == "done"
        assert seen == {min(19, before + 5)}
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
        deadline = time.monotonic() + 60  # the job's thread ends with the job
        while any(t.name == "round-job" for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the round's thread outlived its job"
            time.sleep(0.1)
    finally:
        worker.stop()


def test_only_legal_transitions(round_world):
    service, _, _ = round_world
    _, round_ = service.context()
    with service.db() as db:
        with pytest.raises(IllegalTransition):
            advance(db, round_["id"], "training")  # open -> training skips closing
        advance(db, round_["id"], "closing")
        with pytest.raises(IllegalTransition):
            advance(db, round_["id"], "closing")


def test_rounds_close_on_count_and_timer(round_world):
    service, organizer, _ = round_world
    organizer.update_campaign(KEY, round_policy="count", round_corrections=2)
    crowd_submits(service, people=3, each=1)
    with service.db() as db:
        assert check_auto_close(db, utcnow(), random.Random(0)) is None
    crowd_submits(service, people=3, each=1)
    with service.db() as db:
        assert check_auto_close(db, utcnow(), random.Random(0)) is not None
    assert round_row(service, 1)["closed_by"] == "count"
    organizer.update_campaign(KEY, round_policy="timer", round_seconds=60)
    _, current = service.context()
    with service.db() as db:
        db.table("rounds").update(current["id"], {"closes_at": "2000-01-01T00:00:00+00:00"})
        assert check_auto_close(db, utcnow(), random.Random(0)) is not None
    assert round_row(service, 2)["closed_by"] == "timer"


# Enough epochs to be killed mid-training (not more: the restart trains them again, from the bundle).
KILLED_WORKER = """
import sys, time
from dataclasses import replace
from pathlib import Path
from crowd.campaigns import utcnow
from crowd.config import Settings, ModelSettings, TrainingSettings
from crowd.rounds.engine import build_engine
from crowd.rounds.worker import Worker
settings = Settings(data_dir=Path(sys.argv[1]), model=ModelSettings(base_model=sys.argv[2], device="cpu"),
                    training=TrainingSettings(epochs=30, batch_size=1, max_length=64), eval_samples=2)
Worker(settings.db_path, lambda: build_engine(settings, utcnow), utcnow).step()
"""


def test_a_worker_killed_mid_training_resumes_after_restart(round_world, tiny_model_dir):
    service, organizer, worker = round_world
    organizer.update_campaign(KEY, task="preference", min_corrections=2, heldout_share=0.34)
    crowd_submits(service)
    with service.db() as db:
        before = db.table("corrections").count
    job_id = organizer.close_round(KEY)
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WORKER, str(service.settings.data_dir), str(tiny_model_dir)],
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until it is training
        job = next(j for j in organizer.jobs(KEY) if j["id"] == job_id)
        if job["progress"].get("step", 0) >= 2:
            break
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert job["status"] == "running" and round_row(service, 1)["state"] == "training"
    restarted = Worker(service.settings.db_path, worker._engine_factory, utcnow)  # re-queues
    assert restarted.step()
    assert round_row(service, 1)["state"] == "done"
    with service.db() as db:
        assert db.table("corrections").count == before
        assert store.get_job(db, job_id)["status"] == "finished"


@pytest.mark.slow
def test_a_short_round_on_the_default_model(
    settings, default_model_dir, default_model, new_generation
):
    """The real SmolLM2-135M-Instruct with every candidate kind on: chat, correct, train three
    group candidates and the union, merge the groups', judge them all in looks, finish."""
    settings = replace(
        settings, eval_samples=3, model=replace(settings.model, base_model=str(default_model_dir))
    )
    generation = new_generation(default_model, max_new_tokens=8)
    service = CrowdService(settings, generation, limits=Limits(chats_per_minute=1000))
    organizer = Organizer(service)
    organizer.update_campaign(
        KEY,
        **JOY,
        **ALL_KINDS,
    )
    try:
        crowd_submits(service, people=3, each=3)
    finally:
        generation.close()
    worker = Worker(settings.db_path, lambda: build_engine(settings, utcnow), utcnow)
    job = run_round(organizer, worker)
    assert job["status"] == "finished", job["error"]
    done = round_row(service, 1)
    with service.db() as db:
        n_evaluations = db.table("evaluations").count_where("round_id = ?", [done["id"]])
        kinds = sorted(v["kind"] for v in store.round_versions(db, done["id"]))
    assert kinds == ["group", "group", "group", "merged", "union"]
    assert done["state"] == "done" and n_evaluations == 6


def test_the_shapley_rule_writes_shares_into_the_ledger(round_world):
    service, organizer, worker = round_world
    organizer.update_campaign(
        KEY, task="preference", min_corrections=2, heldout_share=0.34, points_rule="shapley"
    )
    crowd_submits(service)
    assert run_round(organizer, worker)["status"] == "finished"
    done = round_row(service, 1)
    assert done["improved"] == 1
    with service.db() as db:
        ledger = store.points_for_round(db, done["id"])
    assert ledger and all(row["rule"] == "shapley" and row["amount"] > 0 for row in ledger)
    reasons = [json.loads(row["reason"]) for row in ledger]
    assert all("share_of_group" in r and "group_rank" in r for r in reasons)


def test_an_emotion_round_crowns_only_beyond_the_standard_errors(round_world):
    """A candidate leads the champion on mean distance (the old rule crowned it), but with a
    huge crown_z no lead is significant and the champion is kept."""
    service, organizer, worker = round_world
    organizer.update_campaign(KEY, **JOY)
    crowd_submits(service)
    engine = build_engine(service.settings, utcnow)
    # seed -1: round 1 samples on seed 0 (JudgingSettings.for_round), where a candidate leads
    judging = replace(engine.judging, crown_z=1e9, seed=-1)
    worker._engine_factory = lambda: replace(engine, judging=judging)
    assert run_round(organizer, worker)["status"] == "finished"
    done = round_row(service, 1)
    with service.db() as db:
        scored = {
            e["model_version_id"]: json.loads(e["detail"])
            for e in db.query("SELECT * FROM evaluations WHERE round_id = ?", [done["id"]])
        }
        values = {
            e["model_version_id"]: e["value"]
            for e in db.query("SELECT * FROM evaluations WHERE round_id = ?", [done["id"]])
        }
    champion = done["champion_id"]
    assert all(len(d["distances"]) == 4 for d in scored.values())  # every reply's distance
    assert min(values.values()) < values[champion], "no candidate led: the test shows nothing"
    assert done["improved"] == 0 and done["winner_id"] == champion


def test_each_round_samples_the_champions_replies_afresh(round_world):
    """The same champion on the same prompts in two rounds: round 2 draws replies of its own
    (the round's seeds), not the ones round 1 drew, so a champion crowned on lucky replies is
    not measured on them again in every later round (docs/results/candidates.md)."""
    service, organizer, worker = round_world
    organizer.update_campaign(
        KEY,
        **JOY,
        win_margin=100.0,  # nothing is crowned: both rounds judge the base
    )
    judged = []
    for number in (1, 2):
        crowd_submits(service, people=9, each=1)  # everyone asks "Question 0?"
        assert run_round(organizer, worker)["status"] == "finished"
        done = round_row(service, number)
        with service.db() as db:
            [champion] = db.query(
                "SELECT * FROM evaluations WHERE round_id = ? AND model_version_id = ?",
                [done["id"], done["champion_id"]],
            )
        judged.append(json.loads(champion["detail"]))
    one, two = judged
    assert round_row(service, 2)["champion_id"] == round_row(service, 1)["champion_id"]
    assert len(one["distances"]) == len(two["distances"]) == 4
    assert one["distances"] != two["distances"] and one["samples"] != two["samples"]
