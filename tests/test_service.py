"""Volunteer actions through the service layer, on the tiny model and a real database."""

from __future__ import annotations

import json

import pytest

from crowd.limits import Limits, Refused
from crowd.service import CrowdService
from storage import queries
from storage.db import connect


@pytest.fixture
def service(settings, new_generation):
    generation = new_generation(max_new_tokens=6)
    svc = CrowdService(settings, generation, limits=Limits(chats_per_minute=100))
    yield svc
    generation.close()


def chat(service, session, text="Hello there", conversation_id=None):
    steps = list(service.send(session.token, conversation_id, text))
    assert steps[-1].message_id is not None
    return steps[-1]


def count(service, table: str) -> int:
    with connect(service.settings.db_path) as db:
        return db[table].count


def test_join_assigns_balanced_groups_and_resume_keeps_them(service):
    sessions = [service.join(f"Person {i}", consent=True) for i in range(6)]
    assert sorted(s.group_index for s in sessions) == [0, 0, 1, 1, 2, 2]
    again = service.resume(sessions[3].token)
    assert (again.participant_id, again.group_index) == (
        sessions[3].participant_id,
        sessions[3].group_index,
    )


def test_nothing_is_stored_without_consent_or_with_a_bad_name(service):
    with pytest.raises(Refused, match="consent"):
        service.join("Ada", consent=False)
    for name in ["", "<b>Ada</b>", "x" * 40, "A", "Ada\x07"]:
        with pytest.raises(Refused):
            service.join(name, consent=True)
    assert count(service, "participants") == 0


def test_a_forged_or_edited_token_is_refused(service):
    session = service.join("Ada", consent=True)
    other = service.identities.sign("someone-else")
    for token in [session.token[:-2] + "xx", "garbage", other, None]:
        with pytest.raises(Refused, match="identity"):
            service.resume(token)


def test_chat_stores_both_messages_with_the_model_version(service):
    session = service.join("Ada", consent=True)
    reply = chat(service, session)
    with connect(service.settings.db_path) as db:
        message = queries.get_message(db, reply.message_id)
    assert message["participant_id"] == session.participant_id
    assert message["model_version_id"] is not None
    assert message["content"] == reply.text
    assert count(service, "messages") == 2


def test_corrections_keep_provenance(service):
    session = service.join("Ada", consent=True)
    reply = chat(service, session)
    rewrite_id = service.rewrite(session.token, reply.message_id, "A kinder reply.")
    service.label(session.token, reply.message_id, "joy")
    service.rate_reply(session.token, reply.message_id, 1)
    second = list(service.another(session.token, reply.message_id))[-1]
    service.choose(session.token, reply.message_id, second.message_id, "b")
    with connect(service.settings.db_path) as db:
        row = queries.get_correction(db, rewrite_id)
    assert row["participant_id"] == session.participant_id
    assert row["group_index"] == session.group_index
    assert row["model_version_id"] is not None and row["round_id"] is not None
    assert row["original"] == reply.text and '"Hello there"' in row["prompt"]
    assert count(service, "corrections") == 4
    # Reply B answers the same turn as reply A: its prompt must not contain A.
    b_rewrite = service.rewrite(session.token, second.message_id, "Another kind reply.")
    with connect(service.settings.db_path) as db:
        b_prompt = queries.get_correction(db, b_rewrite)["prompt"]
    assert b_prompt == row["prompt"]


def test_a_rewritten_reply_is_the_rewrite_from_then_on(service):
    """Issue 27: after a rewrite, the reply's label, rating and A/B pick are about the rewrite,
    the next turn's context holds it, and reply B answers the conversation before reply A."""
    session = service.join("Ada", consent=True)
    first = chat(service, session)
    service.rewrite(session.token, first.message_id, "Mine, kinder.")
    reply = chat(service, session, "And then?", first.conversation_id)
    label = service.label(session.token, first.message_id, "joy", shown="Mine, kinder.")
    b = list(service.another(session.token, reply.message_id))[-1]
    pick = service.choose(
        session.token, reply.message_id, b.message_id, "a", shown=(reply.text, b.text)
    )
    with connect(service.settings.db_path) as db:
        labelled, picked = (queries.get_correction(db, i) for i in (label, pick))
    assert (labelled["shown"], labelled["original"]) == ("Mine, kinder.", first.text)
    context = [
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Mine, kinder."},
        {"role": "user", "content": "And then?"},
    ]
    assert json.loads(picked["prompt"]) == context
    assert (picked["shown"], picked["other_reply"]) == (reply.text, b.text)
    with connect(service.settings.db_path) as db:
        b_message = queries.get_message(db, b.message_id)
    assert queries_prompt(service, b_message) == context  # B answers what A answered


def queries_prompt(service, message: dict) -> list[dict]:
    with connect(service.settings.db_path) as db:
        return queries.prompt_before(db, message)


def test_actions_on_text_not_shown_are_refused_and_store_nothing(service):
    session = service.join("Ada", consent=True)
    reply = chat(service, session)
    first_b = list(service.another(session.token, reply.message_id))[-1]
    newer_b = list(service.another(session.token, reply.message_id))[-1]
    service.rewrite(session.token, reply.message_id, "Changed in another tab.")
    token, a = session.token, reply.message_id
    for match, call in [
        ("changed since", lambda: service.label(token, a, "joy", shown=reply.text)),
        ("changed since", lambda: service.rate_reply(token, a, 1, shown=reply.text)),
        ("changed since", lambda: list(service.another(token, a, shown=reply.text))),
        ("newer second reply", lambda: service.choose(token, a, first_b.message_id, "a")),
        (
            "changed since",
            lambda: service.choose(
                token, a, newer_b.message_id, "a", shown=(reply.text, newer_b.text)
            ),
        ),
        ("not a reply in your chat", lambda: list(service.another(token, newer_b.message_id))),
    ]:
        with pytest.raises(Refused, match=match):
            call()
    assert count(service, "corrections") == 1  # the rewrite only


@pytest.mark.parametrize(
    "text", ["", "   ", "x" * 20_000, "hi\x00there", "<script>alert(1)</script>"]
)
def test_bad_messages_are_refused_and_store_nothing(service, text):
    session = service.join("Ada", consent=True)
    with pytest.raises(Refused):
        list(service.send(session.token, None, text))
    assert count(service, "messages") == 0


def test_bad_corrections_are_refused_and_store_nothing(service):
    ada = service.join("Ada", consent=True)
    bob = service.join("Bob", consent=True)
    reply = chat(service, ada)
    with pytest.raises(Refused, match="not one of"):
        service.label(ada.token, reply.message_id, "hunger")
    with pytest.raises(Refused, match="does not exist"):
        service.rewrite(bob.token, reply.message_id, "Mine now")  # someone else's reply
    with pytest.raises(Refused):
        service.rewrite(ada.token, reply.message_id, "<img src=x onerror=alert(1)>")
    with pytest.raises(Refused, match="does not exist"):
        service.rate_reply(ada.token, 10_000, 1)
    with pytest.raises(Refused):
        service.rate_reply(ada.token, reply.message_id, 5)
    assert count(service, "corrections") == 0


def test_undo_marks_the_correction_and_keeps_it(service):
    session = service.join("Ada", consent=True)
    reply = chat(service, session)
    correction = service.rewrite(session.token, reply.message_id, "Better.")
    service.undo(session.token, correction)
    with connect(service.settings.db_path) as db:
        assert queries.get_correction(db, correction)["undone_at"] is not None
    with pytest.raises(Refused):
        service.undo(service.join("Bob", consent=True).token, correction)


def test_rate_limits_say_when_to_retry(settings):
    svc = CrowdService(settings, None, limits=Limits(submissions_per_minute=1))
    svc.rate.hit("submit:x", 1, "corrections")
    with pytest.raises(Refused, match="try again in") as info:
        svc.rate.hit("submit:x", 1, "corrections")
    assert info.value.retry_after_s > 0


def test_a_correction_is_refused_when_the_round_closes_between_check_and_insert(
    settings, new_generation
):
    """The round's state is checked by the INSERT itself, inside the action's transaction: a
    close that lands right after the service's own checks still refuses the correction."""
    from crowd.rounds.state import close_round
    from crowd.service import context_of

    class OrganizerClosesMidway(CrowdService):  # a real service, closing the round after checking
        def _own_reply(self, db, person, message_id, shown=None):
            checked = super()._own_reply(db, person, message_id, shown)
            campaign, round_ = context_of(db)
            close_round(db, campaign, round_, "organizer", self.now(), self.rng)
            return checked

    generation = new_generation(max_new_tokens=4)
    service = OrganizerClosesMidway(settings, generation)
    session = service.join("Ada", consent=True)
    reply = chat(service, session)
    with pytest.raises(Refused, match="round that has closed"):
        service.rewrite(session.token, reply.message_id, "Better.")
    generation.close()
    assert count(service, "corrections") == 0
    with connect(settings.db_path) as db:  # the whole action rolled back, the close with it
        assert [r["state"] for r in db.query("SELECT state FROM rounds")] == ["open"]


def test_one_voice_per_kind_a_flood_of_rewrites_leaves_one_live(service):
    service.limits = Limits(chats_per_minute=100, submissions_per_minute=100)
    session = service.join("Flooder", consent=True)
    reply = chat(service, session)
    ids = [service.rewrite(session.token, reply.message_id, f"Rewrite {i}") for i in range(30)]
    label = service.label(session.token, reply.message_id, "joy")  # another kind: stays live
    with connect(service.settings.db_path) as db:
        rows = {c["id"]: c for c in db.query("SELECT * FROM corrections")}
        live = [c for c in rows.values() if c["replaced_at"] is None]
        assert sorted(c["id"] for c in live) == [ids[-1], label]
        assert all(rows[ids[i]]["replaced_by"] == ids[i + 1] for i in range(29))  # kept, chained
        assert (
            queries.group_correction_counts(db, rows[label]["round_id"], 3)[session.group_index]
            == 2
        )


def test_a_changed_rating_replaces_the_old_one_even_after_the_undo_window(settings, new_generation):
    clock = iter(f"2026-01-01T00:{m:02d}:00+00:00" for m in range(60))
    generation = new_generation(max_new_tokens=4)
    service = CrowdService(settings, generation, now=lambda: next(clock))
    session = service.join("Ada", consent=True)
    reply = chat(service, session)
    up = service.rate_reply(session.token, reply.message_id, 1)
    down = service.rate_reply(session.token, reply.message_id, -1)  # minutes later
    generation.close()
    with connect(settings.db_path) as db:
        live = list(db.query(f"SELECT * FROM corrections c WHERE {queries.LIVE}"))
    assert [(c["id"], c["rating"]) for c in live] == [(down, -1)]
    with pytest.raises(Refused, match="replaced"):
        service.undo(session.token, up)


def test_get_message_reads_columns_by_name(service):
    with connect(service.settings.db_path) as db:
        db.execute("ALTER TABLE messages ADD COLUMN extra TEXT DEFAULT 'x'")
    session = service.join("Ada", consent=True)
    reply = chat(service, session)
    with connect(service.settings.db_path) as db:
        message = queries.get_message(db, reply.message_id)
    assert message["participant_id"] == session.participant_id and message["extra"] == "x"
