"""Peer review and what it decides (issue 12), through the service on the tiny model and a real
database: the review rules, the queue, trust in training and judging, the per-person cap and
the points."""

from __future__ import annotations

import pytest

from crowd.config import ModelSettings
from crowd.generation import GenerationService
from crowd.limits import Limits, Refused
from crowd.models import load_base
from crowd.organizer import Organizer
from crowd.review import Reviews
from crowd.rounds.data import judging_material, training_material
from crowd.service import CrowdService, context_of
from storage import queries
from storage import rounds as store
from storage.db import connect

KEY = "organizer-test-secret"


@pytest.fixture
def world(settings):
    loaded = load_base(settings.model.base_model, settings.models_dir, device="cpu")
    generation = GenerationService(loaded, ModelSettings(max_new_tokens=3, temperature=0.0))
    limits = Limits(chats_per_minute=1000, submissions_per_minute=1000)
    service = CrowdService(settings, generation, limits=limits)
    yield service, Reviews(service), Organizer(service)
    generation.close()


def people(service, n: int) -> list[str]:
    return [service.join(f"Person {i}", consent=True).token for i in range(n)]


def rewrite(service, token: str, text: str = "A joyful reply!") -> int:
    reply = list(service.send(token, None, "Hello?"))[-1]
    return service.rewrite(token, reply.message_id, text)


def stored_reviews(service) -> int:
    with connect(service.settings.db_path) as db:
        return db["reviews"].count


def test_bad_reviews_are_refused_and_store_nothing(world):
    service, reviews, organizer = world
    author, reviewer, banned = people(service, 3)
    correction = rewrite(service, author)
    undone = rewrite(service, author, "Withdrawn.")
    service.undo(author, undone)
    hidden = rewrite(service, author, "Hidden.")
    organizer.hide(KEY, hidden)
    cases = [
        (author, correction, "endorse", "your own"),
        (reviewer, 999, "endorse", "does not exist"),
        (reviewer, "x", "endorse", "does not exist"),
        (reviewer, undone, "endorse", "withdrawn"),
        (reviewer, hidden, "reject", "removed"),
        (reviewer, correction, "maybe", "'endorse' or 'reject'"),
    ]
    for token, cid, verdict, message in cases:
        with pytest.raises(Refused, match=message):
            reviews.review(token, cid, verdict)
    assert stored_reviews(service) == 0
    reviews.review(reviewer, correction, "endorse")
    with pytest.raises(Refused, match="already reviewed"):
        reviews.review(reviewer, correction, "reject")
    organizer.ban(KEY, service.resume(banned).participant_id)
    with pytest.raises(Refused, match="suspended"):
        reviews.review(banned, correction, "endorse")
    assert stored_reviews(service) == 1


def test_the_queue_never_shows_ones_own_and_favours_the_least_reviewed(world):
    service, reviews, _ = world
    tokens = people(service, 6)
    mine = {t: rewrite(service, t, f"Rewrite by {i}") for i, t in enumerate(tokens)}
    first = reviews.queue(tokens[0], limit=10)
    assert mine[tokens[0]] not in [i["correction_id"] for i in first]
    assert len(first) == 5 and {i["kind"] for i in first} == {"rewrite"}
    assert len({i["group"] for i in first[:3]}) == 3, "the first items spread over the groups"
    reviews.review(tokens[1], mine[tokens[2]], "endorse")
    order = [i["correction_id"] for i in reviews.queue(tokens[0], limit=10)]
    assert order[-1] == mine[tokens[2]], "the reviewed one goes to the back"
    assert first[0]["prompt"][-1]["content"] == "Hello?" and first[0]["rewrite"].startswith(
        "Rewrite"
    )


def test_a_rejected_correction_neither_trains_nor_judges(world):
    service, reviews, _ = world
    author, *others = people(service, 4)
    kept, rejected = rewrite(service, author, "Good!"), rewrite(service, author, "Spam spam.")
    for token in others[:2]:
        reviews.review(token, rejected, "reject")
        reviews.review(token, kept, "endorse")
    with connect(service.settings.db_path) as db:
        campaign, round_ = context_of(db)
        data, usage = training_material(db, campaign, round_)
        texts = [e.messages[-1]["content"] for g in data.values() for e in g.sft]
        assert texts == ["Good!"] and usage[service.resume(author).participant_id] == [1, 1]
        store.set_split(db, [kept, rejected], "heldout")
        assert [c["id"] for c in judging_material(db, campaign, round_)] == [kept]
        store.update_campaign(db, campaign["id"], reviews_on=0)  # the loop before review
        campaign, _ = context_of(db)
        assert {c["id"] for c in judging_material(db, campaign, round_)} == {kept, rejected}


def test_unreviewed_corrections_train_but_only_trusted_ones_judge(world):
    service, _, _ = world
    (token,) = people(service, 1)
    cid = rewrite(service, token)
    with connect(service.settings.db_path) as db:
        campaign, round_ = context_of(db)
        data, _ = training_material(db, campaign, round_)
        assert sum(len(g.sft) for g in data.values()) == 1
        store.set_split(db, [cid], "heldout")
        assert judging_material(db, campaign, round_) == []


def test_no_person_supplies_more_than_the_cap_of_a_groups_training(world):
    service, _, _ = world
    tokens = people(service, 12)  # 4 per group
    group = {t: service.resume(t).group_index for t in tokens}
    flooder = tokens[0]
    mates = [t for t in tokens[1:] if group[t] == group[flooder]]
    for i in range(20):
        rewrite(service, flooder, f"Flood {i}")
    for mate in mates:
        rewrite(service, mate, "Honest one.")
        rewrite(service, mate, "Honest two.")
    with connect(service.settings.db_path) as db:
        campaign, round_ = context_of(db)
        data, usage = training_material(db, campaign, round_)
        counts = queries.group_correction_counts(db, round_["id"], 3)
    texts = [e.messages[-1]["content"] for e in data[group[flooder]].sft]
    flood = sum(t.startswith("Flood") for t in texts)
    assert flood / len(texts) <= 0.25 and flood == 2  # 6 honest: at most 2 of 8
    assert usage[service.resume(flooder).participant_id] == [2, 18]  # the excess is kept
    assert counts[group[flooder]] == 26, "nothing was deleted"


def test_the_export_holds_what_counts_and_flags_the_rest(world, tmp_path):
    import json

    from crowd.export import export_dataset

    service, reviews, _ = world
    author, *others = people(service, 3)
    kept, rejected = rewrite(service, author, "Good!"), rewrite(service, author, "Spam spam.")
    replaced = rewrite(service, author, "First try.")
    with connect(service.settings.db_path) as db:
        message_id = queries.get_correction(db, replaced)["message_id"]
    newer = service.rewrite(author, message_id, "Second try.")
    for token in others:
        reviews.review(token, rejected, "reject")
    export_dataset(service.settings.db_path, tmp_path / "out")
    sft = [json.loads(line) for line in (tmp_path / "out" / "sft.jsonl").read_text().splitlines()]
    assert sorted(r["correction_id"] for r in sft) == sorted([kept, newer])
    events = {
        e["correction_id"]: e
        for e in map(json.loads, (tmp_path / "out" / "events.jsonl").read_text().splitlines())
    }
    assert events[rejected]["used"] is False and events[rejected]["rejections"] == 2
    assert events[replaced]["used"] is False and events[replaced]["replaced_at"]
    assert events[kept]["used"] is True
