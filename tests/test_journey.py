"""The volunteer's journey (issue 16) on real SQLite, the tiny model and the real worker: the
how-to and label definitions, live round progress from the job records, the end-of-round
notice, and the before/after replies generated once after crowning."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import gradio as gr
import pytest

from crowd import guide, views
from crowd.campaigns import utcnow
from crowd.emotions import GOEMOTIONS_LABELS
from crowd.evaluation import EvalSet
from crowd.limits import Limits
from crowd.organizer import Organizer
from crowd.rounds import showcase
from crowd.rounds.engine import build_engine
from crowd.rounds.worker import Worker
from crowd.scoring.scorers import one_hot
from crowd.service import CrowdService
from crowd.ui.journey import (
    JourneyHandlers,
    before_after_html,
    definition_of,
    emotion_choices,
    howto_text,
    progress_text,
)
from storage import before_after as before_after_store
from storage.db import connect
from tests.apps import KEY
from tests.rounds import ONE_PER_GROUP, crowd_submits


def test_every_label_has_a_definition_where_it_is_picked():
    choices = emotion_choices()
    assert [value for _, value in choices] == list(GOEMOTIONS_LABELS)
    assert all(
        shown.startswith(f"{value}: ") and len(shown) > len(value) + 5 for shown, value in choices
    )
    assert definition_of("grief") == "**grief**: " + guide.emotion_definitions()["grief"]
    assert definition_of(None) == "" and definition_of("hunger") == ""


def test_a_definitions_file_missing_a_label_is_refused_by_name(tmp_path, monkeypatch):
    broken = json.loads(guide.DEFINITIONS_FILE.read_text())
    del broken["relief"]
    (tmp_path / "defs.json").write_text(json.dumps(broken))
    monkeypatch.setattr(guide, "DEFINITIONS_FILE", tmp_path / "defs.json")
    guide.emotion_definitions.cache_clear()
    try:
        with pytest.raises(ValueError, match="relief"):
            guide.emotion_definitions()
    finally:
        guide.emotion_definitions.cache_clear()


def test_the_howto_has_its_steps_and_an_example_for_the_task():
    preference = howto_text("preference", None)
    assert "1. " in preference and "3. " in preference and "4. " not in preference
    assert "prefer" in preference and guide.good_rewrite("preference", None)["after"] in preference
    joy = howto_text("emotion", "joy")
    assert "convey **joy**" in joy and "marathon" in joy
    pride = guide.good_rewrite("emotion", "pride")  # no example of its own: the generic one
    assert "pride" in pride["after"] and "{emotion}" not in pride["after"]
    reviewed = howto_text("emotion", "joy", reviews_on=True)  # the campaign default
    assert "3. **Review**" in reviewed and "4. **Watch" in reviewed and "Review" not in joy


@pytest.fixture
def world(settings, new_generation):
    # Many epochs of a few examples: each group trains for a few seconds, so the worker's relay
    # of the job's progress (every 0.5 s) reads its steps and their estimate on any machine.
    settings = replace(settings, eval_samples=2, training=replace(settings.training, epochs=40))
    generation = new_generation(max_new_tokens=6)
    limits = Limits(chats_per_minute=1000, submissions_per_minute=1000)
    service = CrowdService(settings, generation, limits=limits)
    organizer = Organizer(service)
    organizer.update_campaign(
        KEY,
        task="preference",
        min_corrections=2,
        heldout_share=0.34,
        points_rule="paper",
        reviews_on=False,
        person_cap=1.0,
        **ONE_PER_GROUP,  # one candidate per group: the progress counts them
    )
    engine = build_engine(settings, utcnow)
    yield service, organizer, Worker(settings.db_path, lambda: engine, utcnow), engine
    generation.close()


def test_progress_then_notice_then_before_after_stored_once(world):
    service, organizer, worker, engine = world
    sessions = crowd_submits(service, each=4)
    journey = JourneyHandlers(service)
    campaign, _ = service.context()
    db_path = service.settings.db_path
    news, cards, seen = journey.news(sessions[0].token, "unseen")
    assert news == gr.update(visible=False) and cards == "" and seen is None

    organizer.close_round(KEY)
    waiting = views.round_progress(db_path, campaign)
    assert (waiting.number, waiting.stage, waiting.groups_done) == (1, "waiting for the worker", 0)
    news, _, _ = journey.news(sessions[0].token, seen)
    assert "Round 1 is being trained and judged" in news["value"] and "0 of 3" in news["value"]

    stages = watch_progress(db_path, campaign, worker)
    trained = [p for p in stages if p.stage.startswith("training group") and p.eta_s is not None]
    assert {p.stage for p in trained} == {f"training group {g}" for g in range(3)}
    judging = [p for p in stages if p.stage == "judging the models"]
    assert judging and all(p.groups_done == 3 and p.models in (None, 4) for p in judging)
    assert judging[-1].judged == 4 and "4 of 4 models judged" in progress_text(judging[-1])
    assert [p.groups_done for p in stages] == sorted(p.groups_done for p in stages)
    assert views.round_progress(db_path, campaign) is None

    with connect(db_path) as db:
        round_1 = db.execute("SELECT id, improved FROM rounds WHERE number = 1").fetchone()
        stored = list(db.query("SELECT * FROM before_after ORDER BY id"))
    assert round_1[1] == 1, "the preference round crowns a winner on the tiny model"
    assert len(stored) == 6 * 3  # three prompts each, of four written
    person = sessions[0].participant_id
    mine = [r for r in stored if r["participant_id"] == person]
    assert [r["prompt"] for r in mine] == ["Question 0?", "Question 1?", "Question 2?"]
    assert all(r["before"] and r["after"] and r["before_distance"] is None for r in mine)

    notice = views.round_notice(db_path, person, campaign["id"])
    news, cards, seen = journey.news(sessions[0].token, None)
    assert f"Round 1 is over: group {notice.winner_group} won" in news["value"]
    assert (notice.my_group == notice.winner_group) == (
        "Your group" in news["value"] and "won!" in news["value"]
    )
    if notice.points:
        assert f"You earned **{notice.points:g} points**" in news["value"]
    assert "Question 2?" in cards and "Before (old champion)" in cards and seen == [1, 3, False]
    assert journey.news(sessions[0].token, seen)[1] == gr.skip()  # unchanged: not re-sent

    # Generated once, by the round job, and stored with the crowning; a view only reads.
    assert worker.step() is False
    with connect(db_path) as db:
        assert list(db.query("SELECT * FROM before_after ORDER BY id")) == stored
    said_nothing = service.join("Quiet One", consent=True)
    # The round is done before its before/after replies are made: while its job still runs,
    # a volunteer who wrote is told they are being prepared, not that they wrote nothing.
    with connect(db_path) as db, db.atomic():
        db.execute("UPDATE jobs SET status = 'running'")
        db.execute("DELETE FROM before_after")
    assert "answering your prompts" in journey.news(sessions[0].token, None)[1]
    assert "You wrote no messages" in journey.news(said_nothing.token, None)[1]
    with connect(db_path) as db:
        db.execute("UPDATE jobs SET status = 'finished'")
    assert "No before/after replies" in journey.news(sessions[0].token, None)[1]


def watch_progress(db_path, campaign: dict, worker) -> list:
    """Run the round's job on a thread and record what a volunteer's page would read."""
    thread = threading.Thread(target=worker.step)
    thread.start()
    seen = []
    while thread.is_alive():
        p = views.round_progress(db_path, campaign)
        if p is not None and (not seen or seen[-1] != p):
            seen.append(p)
        time.sleep(0.02)
    thread.join()
    return seen


def test_emotion_distances_say_which_reply_is_closer_to_the_target(world):
    _, _, _, engine = world
    joyful, angry = "I am so happy, what a wonderful joyful day!", "I hate this, I am furious!"
    joy = EvalSet("emotion", target=one_hot("joy"), scorer=engine.scorer_for(1))
    near, far = showcase._distances(joy, [joyful, angry])
    assert 0 <= near < far
    assert showcase._distances(EvalSet("preference"), [joyful]) == [None]


def test_the_cards_escape_what_people_wrote():
    view = views.BeforeAfter(
        2,
        "joy",
        [
            {
                "prompt": "<b>hi</b>",
                "before": "<script>",
                "after": "ok",
                "before_distance": 1.0,
                "after_distance": 0.5,
            }
        ],
    )
    page = before_after_html(view)
    assert (
        "<script>" not in page
        and "&#60;b&#62;hi" in page
        and "distance to joy: <b>0.50</b>" in page
    )
    assert before_after_html(None) == ""
    assert "no messages" in before_after_html(views.BeforeAfter(2, None, []))


def test_a_round_without_messages_has_no_prompts_to_show(settings):
    service = CrowdService(settings, None)
    service.join("Ada", consent=True)
    with connect(settings.db_path) as db:
        assert before_after_store.prompts_of_round(db, 1, 3) == {}
