"""Peer review and what it decides (issues 12 and 26), through the service on the tiny model and a
real database: dealt items and the refusals around them, the dealing rule, voices, gold items,
trust in training and judging, the per-voice cap and the points. Actions without an address
make each pseudonym its own voice; the tests of voices give addresses."""

from __future__ import annotations

import math
import random

import pytest

from crowd.campaigns import utcnow
from crowd.limits import Limits, Refused
from crowd.organizer import Organizer
from crowd.review import Reviews
from crowd.rounds.judge import MIN_LOOK
from crowd.rounds.material import heldout_items, judging_material, training_material
from crowd.service import CrowdService, context_of
from storage import deals, queries
from storage import rounds as store
from storage.db import connect
from tests.apps import KEY


@pytest.fixture
def world(settings, new_generation):
    generation = new_generation(max_new_tokens=3)
    limits = Limits(chats_per_minute=1000, submissions_per_minute=1000)
    service = CrowdService(settings, generation, limits=limits)
    yield service, Reviews(service), Organizer(service)
    generation.close()


def people(service, n: int) -> list[str]:
    return [service.join(f"Person {i}", consent=True).token for i in range(n)]


def rewrite(service, token: str, text: str = "A joyful reply!", asked: str = "Hello?", **kw) -> int:
    reply = list(service.send(token, None, asked, **kw))[-1]
    return service.rewrite(token, reply.message_id, text, **kw)


def stored_reviews(service) -> int:
    with connect(service.settings.db_path) as db:
        return db.table("reviews").count


def dealt(service, item_id: int) -> dict:
    with connect(service.settings.db_path) as db:
        return deals.get_deal(db, item_id)


def corrections_in(service, items: list[dict]) -> list[int]:
    return [dealt(service, i["item_id"])["correction_id"] for i in items]


def review_of(service, reviews, token: str, correction_id: int, verdict: str, **kw) -> int:
    """Review `correction_id` as `token`, through the queue: it must be dealt to them."""
    for item in reviews.queue(token, limit=20, **kw):
        if dealt(service, item["item_id"])["correction_id"] == correction_id:
            return reviews.review(token, item["item_id"], verdict, **kw)
    raise AssertionError(f"correction {correction_id} was not dealt")


def net(n: int) -> dict:
    """The address keyword of an action from network n (one /24 each)."""
    return {"address": f"198.51.{n}.{7 + n}"}


def test_bad_reviews_are_refused_and_store_nothing(world):
    service, reviews, organizer = world
    author, reviewer, other, banned, set_aside = people(service, 5)
    kept, undone, hidden = (rewrite(service, author, t) for t in ("Kept.", "Gone.", "Hidden."))
    items = dict(zip(corrections_in(service, q := reviews.queue(reviewer)), q))
    assert set(items) == {kept, undone, hidden}
    others_item = reviews.queue(other)[0]["item_id"]
    service.undo(author, undone)
    organizer.hide(KEY, hidden)
    cases = [
        (reviewer, 9999, "endorse", "not dealt to you"),
        (reviewer, "x", "endorse", "not dealt to you"),
        (reviewer, others_item, "endorse", "not dealt to you"),
        (author, items[kept]["item_id"], "endorse", "not dealt to you"),
        (reviewer, items[undone]["item_id"], "endorse", "withdrawn"),
        (reviewer, items[hidden]["item_id"], "reject", "removed"),
        (reviewer, items[kept]["item_id"], "maybe", "'endorse' or 'reject'"),
    ]
    for token, item, verdict, message in cases:
        with pytest.raises(Refused, match=message):
            reviews.review(token, item, verdict)
    assert stored_reviews(service) == 0
    reviews.review(reviewer, items[kept]["item_id"], "endorse")
    with pytest.raises(Refused, match="already reviewed"):
        reviews.review(reviewer, items[kept]["item_id"], "reject")
    for token, punish, message in (
        (banned, organizer.ban, "suspended"),
        (set_aside, organizer.hide_person, "set your contributions aside"),
    ):
        item = reviews.queue(token)[0]["item_id"]
        punish(KEY, service.identities.verify(token))
        with pytest.raises(Refused, match=message):
            reviews.review(token, item, "endorse")
        with pytest.raises(Refused, match=message):
            reviews.queue(token)
    assert stored_reviews(service) == 1


def test_a_second_pseudonym_of_the_same_voice_cannot_review_the_same_item(world):
    service, reviews, _ = world
    author = service.join("Author", True, **net(0)).token
    first = service.join("First", True, **net(1)).token
    second = service.join("Second", True, **net(2)).token  # elsewhere for now
    correction = rewrite(service, author, **net(0))
    item = reviews.queue(second, **net(2))[0]["item_id"]
    review_of(service, reviews, first, correction, "endorse", **net(1))
    service.resume(second)
    list(service.send(second, None, "Hi", **net(1)))  # now seen on the first one's network too
    with pytest.raises(Refused, match="already reviewed that item; one voice"):
        reviews.review(second, item, "endorse", **net(1))
    assert stored_reviews(service) == 1


def test_the_queue_deals_neither_ones_own_voice_nor_an_item_twice_to_a_voice(world):
    service, reviews, _ = world
    ring = [service.join(f"Puppet {i}", True, **net(0)).token for i in range(3)]
    honest = [service.join(f"Honest {i}", True, **net(1 + i)).token for i in range(3)]
    spam = [rewrite(service, ring[0], f"Spam {i}", **net(0)) for i in range(2)]
    good = [rewrite(service, t, f"Good {i}", **net(1 + i)) for i, t in enumerate(honest)]
    to_ring = [c for t in ring for c in corrections_in(service, reviews.queue(t, **net(0)))]
    assert sorted(to_ring) == sorted(good), "each honest item once to the ring, no ring item"
    mine = corrections_in(service, reviews.queue(honest[0], **net(1)))
    assert good[0] not in mine and set(spam) <= set(mine)


def test_every_voice_gets_an_equal_share_of_attention(world):
    service, reviews, _ = world
    flooder = service.join("Flooder", True, **net(0)).token
    writers = [service.join(f"Writer {i}", True, **net(1 + i)).token for i in range(3)]
    flood = [rewrite(service, flooder, f"Flood {i}", **net(0)) for i in range(12)]
    honest = [rewrite(service, t, f"Honest {i}", **net(1 + i)) for i, t in enumerate(writers)]
    reviewer = service.join("Reviewer", True, **net(9)).token
    first = corrections_in(service, reviews.queue(reviewer, 4, **net(9)))
    assert len(set(first) & set(flood)) == 1 and set(honest) < set(first), "one item per voice"
    again = corrections_in(service, reviews.queue(reviewer, 4, **net(9)))
    assert again == first, "open deals come back first, in order"
    reviews.skip(reviewer, reviews.queue(reviewer, 1, **net(9))[0]["item_id"], **net(9))
    after = corrections_in(service, reviews.queue(reviewer, 20, **net(9)))
    assert first[0] not in after and len(after) == len(flood) + len(honest) - 1


def test_a_voice_is_audited_in_random_order_and_finished_before_the_next_item(world):
    from crowd.dealing import deal
    from crowd.voices import voices_of

    voices = voices_of(
        [("ring", "net:192.0.2.0/24"), ("a", "net:198.51.100.0/24"), ("me", "net:203.0.113.0/24")],
        {},
    )
    items = [(i, "ring") for i in range(10)] + [(100, "a")]
    orders = {tuple(deal(items, "me", voices, {}, 2, 2, random.Random(seed))) for seed in range(8)}
    assert len({o[0] for o in orders if o[0] != 100}) > 1, "the ring's first item is random"
    assert all(100 in o for o in orders), "the other voice is not starved"
    reviewed = {3: {"a": "endorse"}}  # item 3 is one review short of a verdict: dealt first
    assert deal(items[:10], "me", voices, reviewed, 2, 1, random.Random(0)) == [3]


def test_a_rejected_correction_neither_trains_nor_judges(world):
    service, reviews, _ = world
    author, *others = people(service, 4)
    kept, rejected = rewrite(service, author, "Good!"), rewrite(service, author, "Spam spam.")
    for token in others[:2]:
        review_of(service, reviews, token, rejected, "reject")
        review_of(service, reviews, token, kept, "endorse")
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


def test_each_round_is_judged_first_on_its_own_heldout_prompts(world):
    """A champion crowned on round 1's held-out prompts is judged in round 2 on round 2's first
    (the judge's looks take the first prompts), then on round 1's: newest round first."""
    service, _, _ = world
    tokens = people(service, 3)

    def heldout_in_round(asked: str) -> list[int]:
        ids = [rewrite(service, t, "Glad!", asked=f"{asked} {i}?") for i, t in enumerate(tokens)]
        with connect(service.settings.db_path) as db:
            store.set_split(db, ids, "heldout")
        return ids

    first = heldout_in_round("First")
    with connect(service.settings.db_path) as db:
        campaign, one = context_of(db)
        store.update_campaign(db, campaign["id"], reviews_on=0)
        store.add_round(db, campaign["id"], 2, one["champion_id"], utcnow(), None)
    second = heldout_in_round("Second")
    with connect(service.settings.db_path) as db:
        campaign, two = context_of(db)
        assert two["number"] == 2
        judging = judging_material(db, campaign, two)
        assert [c["id"] for c in judging] == second + first
        prompts, _ = heldout_items(judging, campaign["task"], campaign["target_emotion"])
        asked = [p[-1]["content"] for p in prompts]
        assert asked == ["Second 0?", "Second 1?", "Second 2?", "First 0?", "First 1?", "First 2?"]
        assert [c["id"] for c in judging_material(db, campaign, one)] == first


def test_a_ring_that_sends_its_heldout_items_first_does_not_own_the_judges_first_look(world):
    """Three pseudonyms on one network send 12 held-out items before four honest volunteers
    on four networks send 3 each. The cap keeps 4 of the ring's (a quarter of 16); dealt one
    per voice in turn, no first part of the judging set the judge's looks can take (MIN_LOOK
    replies and up) holds more of the ring's than its turn gives it. By id, the first 4 were
    the ring's."""
    service, _, _ = world
    ring = [service.join(f"Puppet {i}", True, **net(0)).token for i in range(3)]
    honest = [service.join(f"Honest {i}", True, **net(1 + i)).token for i in range(4)]
    asked = {}
    for i in range(12):
        cid = rewrite(service, ring[i % 3], "Ring.", asked=f"Ring {i}?", **net(0))
        asked[cid] = "ring"
    for k, token in enumerate(honest):
        for i in range(3):
            asked[rewrite(service, token, "Glad!", asked=f"Honest {k}.{i}?", **net(1 + k))] = k
    with connect(service.settings.db_path) as db:
        store.set_split(db, list(asked), "heldout")
        store.update_campaign(db, context_of(db)[0]["id"], reviews_on=0)
        campaign, round_ = context_of(db)
        judging = judging_material(db, campaign, round_)
        prompts, _ = heldout_items(judging, campaign["task"], campaign["target_emotion"])
    owners = [asked[c["id"]] for c in judging]
    assert owners.count("ring") == 4 and len(owners) == 16  # the cap: a quarter
    assert [asked[c] for c in sorted(asked)][:4] == ["ring"] * 4  # oldest first: all the ring's
    for n in range(MIN_LOOK, len(owners) + 1):
        assert owners[:n].count("ring") <= math.ceil(n / 5), (n, owners)  # 5 voices, in turn
    assert owners[:5] == ["ring", 0, 1, 2, 3]  # each voice's oldest, in the order they came
    assert [p[-1]["content"] for p in prompts[:2]] == ["Ring 0?", "Honest 0.0?"]


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
        review_of(service, reviews, token, rejected, "reject")
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


def test_points_follow_the_ledger_rule_used_corrections_and_agreeing_reviews(world):
    import json
    from dataclasses import replace

    from crowd.points import review_awards
    from crowd.rounds.engine import build_engine
    from crowd.rounds.worker import Worker

    service, reviews, organizer = world
    organizer.update_campaign(KEY, task="emotion", target_emotion="joy", min_corrections=1)
    tokens = people(service, 6)
    ids = {t: service.resume(t).participant_id for t in tokens}
    troll, honest = tokens[0], tokens[1:]
    spam = [rewrite(service, troll, f"Buy cheap pills {i}") for i in range(2)]
    for token in honest:
        rewrite(service, token, "What a joyful day!")
    for token in honest[:3]:  # three reject the spam; the third review comes after the verdict
        for cid in spam:
            review_of(service, reviews, token, cid, "reject")
    review_of(service, reviews, honest[3], spam[0], "endorse")  # one disagrees with the crowd
    organizer.close_round(KEY)
    settings = replace(service.settings, eval_samples=2)
    worker = Worker(settings.db_path, lambda: build_engine(settings, utcnow), utcnow)
    assert worker.step()
    with connect(settings.db_path) as db:
        ledger = [
            {**r, "reason": json.loads(r["reason"])} for r in db.query("SELECT * FROM points")
        ]
    by_rule = {(r["participant_id"], r["rule"]): r for r in ledger}
    assert not any(r["participant_id"] == ids[troll] for r in ledger), "rejected work earns nothing"
    for token in honest[:3]:
        row = by_rule[(ids[token], "review")]
        assert row["amount"] == pytest.approx(0.2) and row["reason"]["agreeing_reviews"] == 2
    assert (ids[honest[3]], "review") not in by_rule  # its one review disagreed
    for row in ledger:
        if row["rule"] != "review":
            assert row["reason"]["corrections_used"] == 1
    assert review_awards([("a", "endorse", None)]) == []  # no verdict yet: nothing either way


def test_gold_items_are_dealt_unmarked_and_weigh_their_reviewers(world):
    from crowd.assess import assess

    service, reviews, organizer = world
    organizer.add_references(
        KEY, [{"kind": "pair", "prompt": None, "chosen": "Kind words.", "rejected": "Go away."}]
    )
    authors = people(service, 24)
    for i, token in enumerate(authors):
        rewrite(service, token, f"Rewrite {i}.")
    gullible, careful = people(service, 2)
    items = reviews.queue(gullible, limit=20)
    gold = [i for i in items if dealt(service, i["item_id"])["gold_id"]]
    real = [i for i in items if not dealt(service, i["item_id"])["gold_id"]]
    assert gold and real, "a few gold items among the crowd's"
    assert all(set(g) == set(real[0]) and g["kind"] == "rewrite" for g in gold), "unmarked"
    bad = [g for g in gold if g["rewrite"] == "Go away."]
    assert bad, "the reference pair is dealt the wrong way round too (a known-bad rewrite)"
    for item in items:  # endorses everything, the bad gold too
        reviews.review(gullible, item["item_id"], "endorse")
    with connect(service.settings.db_path) as db:
        campaign, _ = context_of(db)
        trust = assess(db, campaign)
    voice = trust.voice(service.identities.verify(gullible))
    assert trust.gold[voice][1] >= 1 and trust.weight(voice) < 1
    assert trust.weight(trust.voice(service.identities.verify(careful))) == 1  # no gold yet


def test_the_organizers_verdict_decides_and_makes_a_gold_item(world):
    from crowd.assess import assess

    service, reviews, organizer = world
    author, *crowd = people(service, 4)
    spam = rewrite(service, author, "Spam.")
    for i in range(8):  # gold is dealt among the crowd's items, one in eight
        rewrite(service, author, f"Fine {i}.")
    for token in crowd[:2]:
        review_of(service, reviews, token, spam, "endorse")  # the crowd is fooled
    for bad in ("maybe", None):
        with pytest.raises(Refused, match="'endorse' or 'reject'"):
            organizer.confirm(KEY, spam, bad)
    with pytest.raises(Refused, match="no reviewable correction"):
        organizer.confirm(KEY, 9999, "reject")
    gold_id = organizer.confirm(KEY, spam, "reject")
    assert organizer.confirm(KEY, spam, "reject") == gold_id  # confirming again changes nothing
    with connect(service.settings.db_path) as db:
        campaign, round_ = context_of(db)
        assert assess(db, campaign).status(spam) == "rejected"
        data, _ = training_material(db, campaign, round_)
    assert not any(e.messages[-1]["content"] == "Spam." for g in data.values() for e in g.sft)
    items = reviews.queue(crowd[2], limit=9)  # the last one of the crowd is dealt it, as gold
    spam_items = [i for i in items if i["rewrite"] == "Spam."]
    assert len(spam_items) == 1 and dealt(service, spam_items[0]["item_id"])["gold_id"] == gold_id


def test_the_review_tab_and_the_api_refuse_what_the_service_refuses(world):
    """An item id that is not yours, sent through the page's handlers or the HTTP API's
    functions, is refused the same way and stores nothing; so are the organizer's new actions
    without the key."""
    import gradio as gr

    from crowd.ui.api import VolunteerApi
    from crowd.ui.review import ReviewHandlers, ReviewTab

    service, reviews, organizer = world
    author, mine, theirs = people(service, 3)
    correction = rewrite(service, author)
    their_item = reviews.queue(theirs)[0]
    handlers = ReviewHandlers(reviews)
    with pytest.warns(UserWarning, match="not dealt to you"):
        tab, shown = handlers.verdict("endorse")(mine, ReviewTab(their_item))
    assert stored_reviews(service) == 0
    assert tab.item is not None and tab.item["item_id"] != their_item["item_id"]  # mine now
    with pytest.warns(UserWarning, match="not dealt to you"):
        handlers.skip(mine, ReviewTab(their_item))
    api = VolunteerApi(service)
    for call in (
        lambda: api.api_review(mine, their_item["item_id"], "endorse"),
        lambda: api.api_review_skip(mine, their_item["item_id"]),
        lambda: api.api_review(mine, correction, "endorse"),
    ):
        with pytest.raises(gr.Error, match="not dealt to you"):
            call()
    assert dealt(service, their_item["item_id"])["skipped_at"] is None
    assert stored_reviews(service) == 0
    for action in (organizer.hide_group, organizer.ban_group):
        with pytest.raises(Refused, match="Organizer access only"):
            action("wrong", service.identities.verify(author))
    with pytest.raises(Refused, match="Organizer access only"):
        organizer.confirm("wrong", correction, "reject")
    tab, _ = handlers.verdict("endorse")(mine, tab)  # the item dealt to me is accepted
    assert stored_reviews(service) == 1


def test_reviews_are_rate_limited_per_network(world):
    service, reviews, _ = world
    author = service.join("Author", True, **net(0)).token
    for i in range(31):
        rewrite(service, author, f"Rewrite {i}.", **net(0))
    puppets = [service.join(f"Puppet {i}", True, **net(1)).token for i in range(2)]
    items = [(p, i["item_id"]) for p in puppets for i in reviews.queue(p, 20, **net(1))]
    assert len(items) == 31, "one network, one voice: each item dealt to it once"
    for token, item in items[:30]:  # the network's budget, spread over its pseudonyms
        reviews.review(token, item, "endorse", **net(1))
    with pytest.raises(Refused, match="Too many reviews in a minute"):
        reviews.review(*items[30], "endorse", **net(1))
    assert stored_reviews(service) == 30
