"""The Data quality view on a real SQLite file: Krippendorff's alpha against hand-worked
figures, leave-one-out agreement, review coverage, the suspicion signals, and a synthetic crowd
whose trolls must top the queue."""

from __future__ import annotations

import random

import numpy as np
import pytest

from crowd import quality, suspicion
from crowd.campaigns import CampaignSpec, create_campaign
from crowd.sim.trolls import seed_crowd
from storage import queries
from storage import rounds as store
from storage.db import connect
from storage.reviews import add_review
from tests.apps import KEY


class Tiny:
    """A campaign in a real database with people, one reply per item, and helpers that write
    corrections and reviews the way the service stores them."""

    def __init__(self, db, people=("ann", "bob", "cat", "dan"), campaign: int | None = None):
        self.db = db
        self.campaign = campaign or create_campaign(db, CampaignSpec(), None, None, "2026-01-05")
        self.round = store.current_round(db, self.campaign)["id"]
        for person in people:
            queries.add_participant(db, person, person.title(), "2026-01-05T09:00:00+00:00")
        self.clock = 0

    def reply(self, owner="ann") -> int:
        conversation = queries.add_conversation(self.db, owner, self.round, 0, "t")
        return queries.add_message(self.db, conversation, "assistant", "Fine.", "t")

    def now(self, seconds=30) -> str:
        self.clock += seconds
        return f"2026-01-05T10:{self.clock // 60 % 60:02d}:{self.clock % 60:02d}+00:00"

    def correct(self, person, message, kind="rewrite", seconds=30, **value) -> int:
        value = value or {"rewrite": f"A better reply by {person} {self.clock}."}
        return queries.add_correction(
            self.db,
            kind=kind,
            participant_id=person,
            round_id=self.round,
            group_index=0,
            message_id=message,
            prompt="[]",
            original="Fine.",
            created_at=self.now(seconds),
            **value,
        )

    def review(self, correction, person, verdict, seconds=30) -> None:
        add_review(self.db, correction, person, verdict, self.round, self.now(seconds))

    def report(self):
        return quality.quality_report(quality.load(self.db, self.campaign))


@pytest.fixture
def tiny(db_path):
    with connect(db_path) as db:
        yield Tiny(db, people=("ann", "bob", "cat", "dan", "eve"))


def alpha_of(report, family, round_=None):
    return next(a for a in report.agreement if a.family == family and a.round == round_)


def test_review_alpha_matches_a_hand_worked_example(tiny):
    # Three corrections: (endorse, endorse), (endorse, reject), (reject, reject, reject).
    # Coincidences: o_EE = 2, o_ER = o_RE = 1, o_RR = 6/2 = 3; n_E = 3, n_R = 4, n = 7.
    # alpha = 1 - (n - 1) * (o_ER + o_RE) / (2 n_E n_R) = 1 - 6 * 2 / 24 = 0.5
    first, second, third = (tiny.correct("ann", tiny.reply()) for _ in range(3))
    for correction, verdicts in [
        (first, {"bob": "endorse", "cat": "endorse"}),
        (second, {"bob": "endorse", "cat": "reject"}),
        (third, {"bob": "reject", "cat": "reject", "dan": "reject"}),
    ]:
        for person, verdict in verdicts.items():
            tiny.review(correction, person, verdict)
    report = tiny.report()
    whole, round_1 = alpha_of(report, "review"), alpha_of(report, "review", 1)
    assert whole.alpha == pytest.approx(0.5) and (whole.items, whole.labels) == (3, 7)
    assert round_1.alpha == pytest.approx(0.5)
    emotion = alpha_of(report, "emotion")
    assert emotion.alpha is None and "two people" in emotion.note


def test_alpha_matches_the_package_documentation_example():
    # krippendorff's own docstring: nominal alpha of this reliability data is 0.691358
    nan = np.nan
    data = [
        [nan, nan, nan, nan, nan, 3, 4, 1, 2, 1, 1, 3, 3, nan, 3],
        [1, nan, 2, 1, 3, 3, 4, 3, nan, nan, nan, nan, nan, nan, nan],
        [nan, nan, 2, 1, 3, 4, 4, nan, 2, 1, 1, 3, 3, nan, 4],
    ]
    items = {
        str(unit): {
            f"coder{c}": str(int(row[unit])) for c, row in enumerate(data) if row[unit] == row[unit]
        }
        for unit in range(15)
    }
    assert quality.nominal_alpha(items).alpha == pytest.approx(0.691358, abs=1e-6)
    same = quality.nominal_alpha({"x": {"a": "joy", "b": "joy"}, "y": {"a": "joy", "c": "joy"}})
    assert same.alpha is None and "same" in same.note


def test_emotion_and_choice_labels_of_the_same_item_are_compared(tiny):
    reply, other = tiny.reply(), tiny.reply()
    for person, emotion in [("ann", "joy"), ("bob", "joy"), ("cat", "anger")]:
        tiny.correct(person, reply, kind="emotion", emotion=emotion)
    for person in ("ann", "bob"):
        tiny.correct(person, reply, kind="choice", choice="a", other_message_id=other)
    undone = tiny.correct("dan", reply, kind="emotion", emotion="anger")
    queries.mark_undone(tiny.db, undone, "t")  # an undone label is no label
    report = tiny.report()
    assert alpha_of(report, "emotion").labels == 3
    assert alpha_of(report, "emotion").alpha == pytest.approx(1 - 2 * 2 / (2 * 2 * 1))
    assert alpha_of(report, "choice").alpha is None  # both picked A: a single value


def test_agreement_with_the_majority_leaves_the_person_out(tiny):
    reply = tiny.reply()
    for person, emotion in [("ann", "joy"), ("bob", "joy"), ("cat", "joy"), ("dan", "anger")]:
        tiny.correct(person, reply, kind="emotion", emotion=emotion)
    tie = tiny.reply()
    for person, emotion in [("ann", "joy"), ("bob", "anger")]:
        tiny.correct(person, tie, kind="emotion", emotion=emotion)
    peers = quality.peer_agreement(quality.load(tiny.db, tiny.campaign).labels)
    # ann's tie item: the other label is bob's alone, so anger is the majority there
    assert peers["ann"] == (1, 2) and peers["bob"] == (1, 2)
    assert peers["cat"] == (1, 1) and peers["dan"] == (0, 1)


def test_coverage_counts_live_corrections_with_enough_reviews(tiny):
    reviewed, half, alone = (tiny.correct("ann", tiny.reply()) for _ in range(3))
    tiny.review(reviewed, "bob", "endorse")
    tiny.review(reviewed, "cat", "reject")
    tiny.review(half, "bob", "endorse")
    hidden_text = tiny.correct("eve", tiny.reply())
    tiny.review(hidden_text, "bob", "endorse")
    tiny.review(hidden_text, "cat", "endorse")
    tiny.db.execute("UPDATE participants SET hidden_at = 't' WHERE id = 'eve'")
    whole = tiny.report().coverage[0]
    assert (whole.round, whole.live, whole.covered) == (None, 3, 1)
    assert alone  # never reviewed: counted live, not covered


def test_each_signal_on_its_own(tiny):
    assert (
        suspicion.near_duplicate_share(["Buy now at spam dot com!", "buy now at  spam dot com!!"])
        == 1
    )
    assert suspicion.near_duplicate_share(["A walk by the sea.", "Tea and a good book."]) == 0
    assert suspicion.near_duplicate_share([]) == 0
    gaps = suspicion.median_gaps(
        [
            ("a", "2026-01-05T10:00:00+00:00"),
            ("a", "2026-01-05T10:00:02+00:00"),
            ("a", "2026-01-05T10:00:10+00:00"),
            ("b", "2026-01-05T10:00:00+00:00"),
        ]
    )
    assert gaps == {"a": 5.0}  # b has too few actions for a pace
    calm = suspicion.signals((9, 10), (0, 4), 60.0, 60.0, 0.0, (10, 10))
    wild = suspicion.signals((0, 10), (4, 4), 2.0, 60.0, 1.0, (100, 10))
    assert calm["speed"] == 0 and calm["volume"] == 0 and calm["rejected"] == 0
    assert wild == pytest.approx(
        {
            "disagreement": 10 / 15,
            "rejected": 4 / 7,
            "gold": 0,
            "cluster": 0,
            "crowding": 0,
            "speed": 1,
            "duplicates": 1,
            "volume": 1,
        }
    )
    ring = suspicion.signals((0, 0), (0, 0), None, None, 0.0, (0, 0), (1, 3), True, 20)
    assert ring["gold"] == pytest.approx(3 / 7) and ring["cluster"] == 1 and ring["crowding"] == 1
    assert suspicion.signals((0, 0), (0, 0), None, None, 0.0, (0, 0), pseudonyms=2)["crowding"] > 0
    assert 0 <= suspicion.score(calm) < suspicion.score(wild) <= 1
    assert sum(suspicion.WEIGHTS.values()) == pytest.approx(1)


def test_rejected_share_follows_the_trust_rule(tiny):
    spam = [tiny.correct("dan", tiny.reply()) for _ in range(3)]
    for correction in spam[:2]:
        tiny.review(correction, "ann", "reject")
        tiny.review(correction, "bob", "reject")
    tiny.review(spam[2], "ann", "reject")  # one review: pending, not decided
    suspects = {s.participant_id: s for s in tiny.report().suspects}
    assert (suspects["dan"].evidence["rejected"], suspects["dan"].evidence["decided"]) == (2, 2)
    assert suspects["dan"].signals["rejected"] == pytest.approx(2 / 5)


def test_hidden_people_are_scored_but_counted_by_no_one(tiny):
    reply = tiny.reply()
    for person, emotion in [("ann", "joy"), ("bob", "joy"), ("eve", "anger"), ("cat", "anger")]:
        tiny.correct(person, reply, kind="emotion", emotion=emotion)
    tiny.db.execute("UPDATE participants SET hidden_at = 't' WHERE id = 'eve'")
    report = tiny.report()
    assert alpha_of(report, "emotion").labels == 3
    eve = next(s for s in report.suspects if s.participant_id == "eve")
    assert eve.hidden and eve.evidence["compared"] == 1  # ann, bob, cat: joy wins


def test_trolls_top_the_suspicion_queue(db_path):
    with connect(db_path) as db:
        crowd = seed_crowd(db, 1200, n_honest=20, n_trolls=2, rng=random.Random(7))
        report = quality.quality_report(quality.load(db, crowd.campaign_id))
    top = [s.participant_id for s in report.suspects[:2]]
    assert sorted(top) == sorted(crowd.trolls)
    troll, honest = report.suspects[0], report.suspects[2]
    for name in ("disagreement", "rejected", "speed", "duplicates"):
        assert troll.signals[name] > honest.signals[name], name
    assert all(0 <= s.score <= 1 for s in report.suspects)
    assert alpha_of(report, "review").alpha > 0  # honest reviewers outvote the trolls


# -- the organizer's actions --------------------------------------------------------------------


@pytest.fixture
def organizer(settings):
    from crowd.organizer import Organizer
    from crowd.service import CrowdService

    return Organizer(CrowdService(settings, None))


def test_organizer_hides_and_shows_a_person_and_the_view_follows(organizer):
    from crowd import views
    from crowd.limits import Refused

    service = organizer.service
    campaign, round_ = service.context()
    with service.db() as db:
        tiny = Tiny(db, ("ann", "bob", "cat"), campaign=campaign["id"])
        spam = tiny.correct("ann", tiny.reply("ann"))
        tiny.correct("bob", tiny.reply("bob"))
        for reviewer in ("bob", "cat"):
            tiny.review(spam, reviewer, "reject")
        store.add_points(
            db,
            [
                dict(
                    round_id=round_["id"],
                    participant_id="ann",
                    group_index=0,
                    amount=5.0,
                    rule="paper",
                    reason="{}",
                )
            ],
            "t",
        )
    for bad in (None, "", "wrong"):
        with pytest.raises(Refused, match="Organizer access only"):
            organizer.quality(bad)
        with pytest.raises(Refused, match="Organizer access only"):
            organizer.hide_person(bad, "ann")
    with pytest.raises(Refused, match="no participant"):
        organizer.hide_person(KEY, "nobody")
    report = organizer.quality(KEY)
    assert report.suspects[0].participant_id == "ann"
    assert report.coverage[0].live == 2

    assert organizer.hide_person(KEY, "ann") and not organizer.hide_person(KEY, "ann")
    with service.db() as db:
        assert queries.group_correction_counts(db, round_["id"], 3) == [1, 0, 0]
    assert [r["name"] for r in views.leaderboard(service.settings.db_path, campaign["id"])] == []
    hidden = organizer.quality(KEY)
    assert hidden.coverage[0].live == 1
    assert next(s for s in hidden.suspects if s.participant_id == "ann").hidden

    assert organizer.unhide_person(KEY, "ann") and not organizer.unhide_person(KEY, "ann")
    with service.db() as db:
        assert queries.group_correction_counts(db, round_["id"], 3) == [2, 0, 0]
    assert organizer.quality(KEY).coverage[0].live == 2


def test_the_quality_tab_shows_the_view_and_hides_a_troll_in_one_click(organizer):
    import gradio as gr

    from crowd.ui.quality import QUEUE_COLUMNS, QualityHandlers

    with organizer.service.db() as db:  # the synthetic campaign becomes the active one
        crowd = seed_crowd(db, 600, n_honest=12, n_trolls=1, rng=random.Random(3))
    handlers = QualityHandlers(organizer)
    with pytest.warns(UserWarning, match="Organizer access only"):
        assert handlers.view("wrong") == (gr.skip(),) * 5
    summary, alpha, queue, _, _ = handlers.view(KEY)
    assert "Review coverage" in summary and "0.25 × disagreement" in summary
    assert list(alpha["labels"][:1]) == ["emotion labels"] and alpha["round"][0] == "all"
    assert queue["participant"][0] == crowd.trolls[0] and queue["state"][0] == "shown"
    row = queue.iloc[0].tolist()
    picked = handlers.pick(
        gr.SelectData(None, {"index": [0, 0], "value": row[0], "row_value": row})
    )
    assert picked == crowd.trolls[0] and len(row) == len(QUEUE_COLUMNS)

    confirm, question = handlers.ask("hide")(KEY, picked)  # asked first, done on confirmation
    assert confirm == gr.update(visible=True) and f"Hide all the data of {picked}?" in question
    _, _, queue, _, _, confirm = handlers.act("hide")(KEY, picked)
    assert queue["state"][list(queue["participant"]).index(picked)] == "hidden"
    assert confirm == gr.update(visible=False)
    for typed, why in [
        ("", "Click a row"),
        (picked, "already hidden"),
        ("nobody", "no participant"),
    ]:
        with pytest.warns(UserWarning, match=why):
            assert handlers.act("hide")(KEY, typed)[:3] == (gr.skip(),) * 3
    _, _, queue, _, _, _ = handlers.act("unhide")(KEY, picked)
    assert queue["state"][list(queue["participant"]).index(picked)] == "shown"
    _, _, queue, _, _, _ = handlers.act("ban")(KEY, picked, "spam")
    assert picked not in list(queue["participant"])  # banned: out of the queue


# -- the volunteer's review record ----------------------------------------------------------------


def test_my_review_record_counts_statuses_and_agreement_with_the_verdict(tiny, db_path):
    from crowd import views
    from crowd.ui.session import review_text

    trusted, rejected, pending, _alone = (tiny.correct("ann", tiny.reply()) for _ in range(4))
    undone = tiny.correct("ann", tiny.reply())
    queries.mark_undone(tiny.db, undone, "t")  # withdrawn: not in the record
    for correction, verdict in [(trusted, "endorse"), (rejected, "reject")]:
        tiny.review(correction, "bob", verdict)
        tiny.review(correction, "cat", verdict)
    tiny.review(pending, "bob", "endorse")
    tiny.review(pending, "eve", "endorse")  # eve is hidden below: her review does not count
    agreed, outvoted, still_open = (tiny.correct("bob", tiny.reply()) for _ in range(3))
    tiny.review(agreed, "ann", "endorse")
    tiny.review(agreed, "cat", "endorse")
    tiny.review(outvoted, "ann", "endorse")
    tiny.review(outvoted, "cat", "reject")
    tiny.review(outvoted, "dan", "reject")
    tiny.review(still_open, "ann", "reject")
    tiny.db.execute("UPDATE participants SET hidden_at = 't' WHERE id = 'eve'")
    tiny.db.conn.commit()
    campaign = store.get_campaign(tiny.db, tiny.campaign)

    record = views.review_record(db_path, "ann", campaign)
    assert record.statuses == {"trusted": 1, "rejected": 1, "pending": 1, "unreviewed": 1}
    assert (record.reviews, record.decided, record.agreed) == (3, 2, 1)
    text = review_text(record)
    assert "1 endorsed, 1 rejected, 0 contested, 2 waiting for reviews" in text
    assert "3 given; 1 of the 2 decided so far agreed with the final verdict (1 still open)" in text
    newcomer = views.review_record(db_path, "dan", campaign)
    assert newcomer.statuses == {} and review_text(newcomer).startswith("**Your reviews**: 1 given")
    assert review_text(views.review_record(db_path, "nobody", campaign)) == ""


def test_an_open_page_redraws_my_record_when_a_review_arrives(settings):
    import gradio as gr

    from crowd.service import CrowdService
    from crowd.ui.session import SessionHandlers

    session = SessionHandlers(CrowdService(settings, None))
    me = session.service.join("Ada", consent=True)
    campaign, _ = session.service.context()
    with session.service.db() as db:
        tiny = Tiny(db, ("bob", "cat"), campaign=campaign["id"])
        mine = tiny.correct(me.participant_id, tiny.reply(me.participant_id))
    _, _, stamp, _, _, seen, text, *_ = session.tick(me.token, None)
    assert "1 waiting for reviews" in text
    assert session.tick(me.token, stamp, seen)[6] == gr.skip()  # nothing new: boards skipped
    with session.service.db() as db:
        for reviewer in ("bob", "cat"):
            add_review(db, mine, reviewer, "endorse", tiny.round, "2026-01-05T11:00:00+00:00")
    _, _, stamp, _, _, _, text, *_ = session.tick(me.token, stamp, seen)
    assert "1 endorsed" in text and "0 waiting" in text
