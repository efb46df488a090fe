"""Organizer actions: the key is checked on every call; settings are validated; moderation
takes data out of training without deleting it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from crowd.limits import CALLER, KeyGuard, Refused
from crowd.organizer import Organizer
from crowd.service import CrowdService
from storage import queries
from storage.db import connect
from tests.apps import KEY


@pytest.fixture
def organizer(settings):
    return Organizer(CrowdService(settings, None))


def test_every_action_checks_the_key(organizer):
    for bad in [None, "", "wrong", KEY + "x"]:
        with pytest.raises(Refused, match="Organizer access only"):
            organizer.close_round(bad)
        with pytest.raises(Refused):
            organizer.update_campaign(bad, n_groups=4)
    assert organizer.authorized(KEY)


def test_settings_are_validated_and_applied(organizer):
    campaign = organizer.update_campaign(
        KEY,
        task="preference",
        n_groups=4,
        grouping="interleaved",
        prompts=["Hello?", "How are you?"],
        win_margin=0.01,
    )
    assert (campaign["task"], campaign["n_groups"], campaign["grouping"]) == (
        "preference",
        4,
        "interleaved",
    )
    for bad in [
        {"task": "jokes"},
        {"n_groups": 0},
        {"grouping": "alphabetical"},
        {"target_emotion": "hunger"},
        {"prompts": []},
        {"prompts": ["<img src=x>"]},
        {"color": "red"},
        {"heldout_share": 0.95},
    ]:
        with pytest.raises(Refused):
            organizer.update_campaign(KEY, **bad)
    assert organizer.service.context()[0]["task"] == "preference"


def test_closing_twice_is_refused(organizer):
    organizer.close_round(KEY)
    campaign, current = organizer.service.context()
    assert current["number"] == 2 and current["state"] == "open"
    assert [j["status"] for j in organizer.jobs(KEY)] == ["pending"]


def test_hide_and_ban_keep_the_rows(organizer):
    service = organizer.service
    session = service.join("Ada", consent=True)
    _, round_ = service.context()
    with service.db() as db:
        conversation = queries.add_conversation(db, session.participant_id, round_["id"], 0, "t")
        queries.add_message(db, conversation, "user", "hi", "t")
        reply = queries.add_message(
            db, conversation, "assistant", "hello", "t", model_version_id=round_["champion_id"]
        )
    correction = service.rewrite(session.token, reply, "Hello there, friend!")
    assert organizer.hide(KEY, correction)
    with pytest.raises(Refused):
        organizer.hide(KEY, 999)
    assert organizer.ban(KEY, session.participant_id, "spam")
    with pytest.raises(Refused, match="suspended"):
        service.resume(session.token)
    with connect(service.settings.db_path) as db:
        assert db.table("corrections").count == 1
        assert queries.group_correction_counts(db, round_["id"], 3) == [0, 0, 0]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def as_caller(address: str, action):
    token = CALLER.set(address)
    try:
        return action()
    finally:
        CALLER.reset(token)


def test_wrong_keys_back_off_per_address_and_only_slow_everyone_else(organizer):
    clock = Clock()
    paused: list[float] = []
    organizer.guard = KeyGuard(free=5, slow_after=12, clock=clock, sleep=paused.append)
    for _ in range(5):
        assert not as_caller("10.0.0.1", lambda: organizer.authorized("guess"))
    assert not as_caller("10.0.0.1", lambda: organizer.authorized("guess again"))  # locked now
    assert not as_caller("10.0.0.1", lambda: organizer.authorized(KEY))  # even the right key
    with pytest.raises(Refused, match="Too many wrong organizer keys; try again in 1 s"):
        as_caller("10.0.0.1", lambda: organizer.close_round("guess"))
    assert as_caller("10.0.0.2", lambda: organizer.authorized(KEY))  # another address is fine
    for wait in (2, 4, 8):  # each wrong key after a wait doubles the next wait
        clock.now += organizer.guard.wait_s("10.0.0.1")
        assert not as_caller("10.0.0.1", lambda: organizer.authorized("guess"))
        assert organizer.guard.wait_s("10.0.0.1") == wait
    for n in range(40):  # guesses spread over many addresses slow everyone, refuse no one
        as_caller(f"10.9.0.{n}", lambda: organizer.authorized("guess"))
    assert 0 < organizer.guard.delay_s() <= 1.0 and 0 < max(paused) <= 1.0
    assert as_caller("10.0.0.3", lambda: organizer.authorized(KEY))
    for n in range(6):  # an IPv6 /64 is one source, however many addresses it holds
        as_caller(f"2001:db8:0:1::{n + 1}", lambda: organizer.authorized("guess"))
    assert organizer.guard.wait_s("2001:db8:0:1::ffff") > 0
    assert organizer.guard.wait_s("2001:db8:0:2::1") == 0
    clock.now += 901  # quiet for 15 minutes: forgiven
    assert organizer.guard.delay_s() == 0
    assert as_caller("10.0.0.1", lambda: organizer.authorized(KEY))


def test_the_key_is_compared_as_utf8_bytes(settings):
    key = "clé-d'été-très-sûre"
    organizer = Organizer(CrowdService(replace(settings, organizer_secret=key), None))
    assert organizer.authorized(key)
    assert not organizer.authorized("é" * 20)  # a TypeError before
    assert not organizer.authorized("\ud800" * 20)  # a lone surrogate from a JSON body
