"""Issue 28's candidates through the real service, worker, bundle and job on the tiny model: the
union (all groups' trusted data; when it wins, the whole crowd is one group for points), memory
across rounds carried in the bundle, the merged candidate made inside the job, and what a round
says when one of them cannot be built."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crowd.campaigns import DEFAULT_MEMORY_ROUNDS
from crowd.points import ContributionItem, RoundOutcome, ShapleyRule
from crowd.rounds.awards import as_one_group, ledger_rows
from crowd.rounds.bundle import Bundle, read_bundle
from storage import records
from storage import rounds as store
from tests.rounds import HAPPY, JOY, KEY, ONE_PER_GROUP, crowd_submits, round_row, run_round

PREFERENCE = dict(task="preference", min_corrections=2, heldout_share=0.34)


def versions(service, round_id: int) -> list[dict]:
    with service.db() as db:
        return store.round_versions(db, round_id)


def notes(service, number: int) -> list[str]:
    return json.loads(round_row(service, number)["notes"])


def bundle_of(service, number: int) -> tuple[Bundle, dict]:
    """Round `number`'s bundle, read and checked, and its record's settings."""
    with service.db() as db:
        record = records.bundle_of(db, round_row(service, number)["id"])
    return read_bundle(service.settings.data_dir / record["path"]), record["settings"]


def ids(examples) -> list[int]:
    return [e.correction_id for e in examples]


def test_a_round_trains_the_union_and_the_merge_and_judges_them_all(round_world):
    service, organizer, worker = round_world
    organizer.update_campaign(
        KEY,
        **PREFERENCE,
        union_candidate=True,
        merge_method="ties_svd",
        judge="sequential",
        memory_rounds=DEFAULT_MEMORY_ROUNDS,  # the default window: round 1 has no news of it
    )
    crowd_submits(service)
    assert run_round(organizer, worker)["status"] == "finished"
    done = round_row(service, 1)
    made = versions(service, done["id"])
    assert sorted(v["kind"] for v in made) == ["group", "group", "group", "merged", "union"]
    assert all(v["status"] in ("candidate", "champion") for v in made)
    groups = [v["id"] for v in made if v["kind"] == "group"]
    merged = next(v for v in made if v["kind"] == "merged")
    assert json.loads(merged["sources"]) == groups and merged["group_index"] is None
    with service.db() as db:
        judged = {e["model_version_id"] for e in store.round_evaluations(db, done["id"])}
    assert judged == {done["champion_id"], *(v["id"] for v in made)}
    bundle, _ = bundle_of(service, 1)
    union = next(c for c in bundle.candidates if c.kind == "union")
    per_group = [e for c in bundle.candidates if c.kind == "group" for e in bundle.examples_of(c)]
    assert sorted(ids(bundle.examples_of(union))) == sorted(ids(per_group)) != []
    assert bundle.judging.judge == "sequential" and union.scale == 3
    assert notes(service, 1) == []


def test_memory_trains_on_earlier_rounds_and_says_when_the_window_is_longer(round_world):
    service, organizer, worker = round_world
    organizer.update_campaign(
        KEY, **PREFERENCE, union_candidate=True, memory_rounds=5, memory_groups=True
    )
    returning = crowd_submits(service, people=6, each=2)[0]
    assert run_round(organizer, worker)["status"] == "finished"
    assert any("window is 5 earlier rounds" in n and "0 earlier" in n for n in notes(service, 1))
    crowd_submits(service, people=3, each=2)  # three newcomers in round 2
    for turn in range(2):  # and one volunteer of round 1
        reply = list(service.send(returning.token, None, f"Again {turn}?"))[-1]
        service.rewrite(returning.token, reply.message_id, HAPPY)
    assert run_round(organizer, worker)["status"] == "finished"
    (one, _), (two, recorded) = bundle_of(service, 1), bundle_of(service, 2)
    union_one = next(c for c in one.candidates if c.kind == "union")
    union_two = next(c for c in two.candidates if c.kind == "union")
    # The round-2 union trains on round 1's material as well, carried in its own bundle.
    assert ids(two.memory["union"]) == ids(one.examples_of(union_one))
    assert ids(two.examples_of(union_two)) == ids(one.examples_of(union_one)) + ids(
        e for g in union_two.sources for e in two.groups[g]
    )
    assert recorded["memory"]["union"] == ids(two.memory["union"])  # the record keeps them
    # ... it pays only round 2's authors: the contributions are this round's examples.
    assert {cid for _, cid, _ in two.contributions()}.isdisjoint(ids(two.memory["union"]))
    # A group's memory is its round-2 authors' own earlier material: newcomers have none, the
    # returning volunteer's group has exactly theirs that trained in round 1.
    with service.db() as db:
        trained = records.material(db, round_row(service, 1)["id"], "train")
    theirs = [
        r["correction_id"] for r in trained if r["participant_id"] == returning.participant_id
    ]
    remembered = {n: ids(ex) for n, ex in two.memory.items() if n != "union"}
    assert list(remembered.values()) == [theirs] and theirs
    assert "window is 5 earlier rounds" in " ".join(notes(service, 2))


def test_a_union_win_pays_the_whole_crowd_as_one_group(round_world, tmp_path):
    """Every group is below min_corrections, so the union (all groups' corrections) is the
    only candidate; learning the chosen replies beats the untrained champion. The model card
    names it."""
    service, organizer, worker = round_world
    organizer.update_campaign(
        KEY,
        **{**PREFERENCE, "min_corrections": 7},
        union_candidate=True,
        points_rule="shapley",
    )
    sessions = crowd_submits(service)
    assert run_round(organizer, worker)["status"] == "finished"
    done = round_row(service, 1)
    made = versions(service, done["id"])
    assert [v["kind"] for v in made] == ["union"]
    assert done["improved"] == 1 and done["winner_id"] == made[0]["id"]
    with service.db() as db:
        ledger = store.points_for_round(db, done["id"])
    homes = {s.participant_id: s.group_index for s in sessions}
    reasons = [json.loads(r["reason"]) for r in ledger]
    assert {r["participant_id"] for r in ledger} <= set(homes) and len(ledger) >= 4
    assert all(r["candidate"] == "union" and r["group_rank"] == 0 for r in reasons)
    assert all(row["group_index"] == homes[row["participant_id"]] for row in ledger)
    assert len({row["group_index"] for row in ledger}) > 1  # people of several groups
    assert sum(r["share_of_round"] for r in reasons) == pytest.approx(1.0, abs=1e-4)
    import zipfile

    with zipfile.ZipFile(organizer.export_model_zip(KEY, tmp_path)) as bundle:
        card = next(bundle.read(n).decode() for n in bundle.namelist() if n.endswith("README.md"))
    assert "union candidate" in card and f"| 1 | union | v{done['winner_id']} |" in card


def test_one_group_points_are_the_rules_own_over_everyone():
    """The union's points: the campaign's rule with every contributor in one group (Owen values
    with one union are Shapley values); each keeps their own group in the ledger."""
    target = np.eye(28)[3]
    items = [
        ContributionItem("ann", 0, np.eye(28)[3], None),
        ContributionItem("bob", 1, np.eye(28)[5], None),
        ContributionItem("cat", 2, 0.5 * np.eye(28)[3] + 0.5 * np.eye(28)[4], None),
    ]
    outcome = RoundOutcome(1, "emotion", True, 3, {0: -1.0, 1: -2.0, 2: -3.0}, {}, items, target)
    campaign = {"points_rule": "shapley", "reviews_on": 0}
    rows = ledger_rows(campaign, {"id": 1}, outcome, {}, [], "union")
    expected = ShapleyRule().award(as_one_group(outcome))
    assert {r["participant_id"]: r["amount"] for r in rows} == {
        a.participant_id: a.amount
        for a in expected
        if a.amount  # the ledger skips zeros
    }
    assert len(expected) == 3 and len(rows) == 2  # bob's off-target text earns nothing
    assert {r["participant_id"]: r["group_index"] for r in rows} == {"ann": 0, "cat": 2}
    merged = ledger_rows(campaign, {"id": 1}, outcome, {}, [], "merged", {0, 2})
    assert {r["participant_id"]: r["amount"] for r in merged} == {
        a.participant_id: a.amount
        for a in ShapleyRule().award(as_one_group(outcome, {0, 2}))
        if a.amount
    }
    assert "bob" not in {r["participant_id"] for r in merged}  # bob's group: not merged
    paper = ledger_rows({**campaign, "points_rule": "paper"}, {"id": 1}, outcome, {}, [], "union")
    assert {r["amount"] for r in paper} == {3.0}  # everyone ranked first of 3


def test_candidates_that_cannot_be_built_are_noted_and_the_round_goes_on(round_world):
    service, organizer, worker = round_world
    organizer.update_campaign(KEY, **PREFERENCE, union_candidate=True, merge_method="ties")
    sessions = crowd_submits(service, people=3, each=3)  # one person per group
    # Every correction but one group's is hidden: one group candidate, nothing to merge with.
    with service.db() as db:
        hidden = [
            c["id"]
            for c in db.table("corrections").rows
            if c["participant_id"] != sessions[0].participant_id
        ]
    for correction in hidden:
        organizer.hide(KEY, correction)
    assert run_round(organizer, worker)["status"] == "finished"
    said = " ".join(notes(service, 1))
    assert "merged candidate was not built: a merge needs at least two group candidates" in said
    assert round_row(service, 1)["state"] == "done"
    kinds = sorted(v["kind"] for v in versions(service, round_row(service, 1)["id"]))
    assert kinds == ["group", "union"]
    jobs = organizer.jobs(KEY)
    assert any("merge needs at least two" in " ".join(j["notes"]) for j in jobs)
    # Round 2: everything hidden, the union has no trusted data; the round still finishes.
    organizer.update_campaign(KEY, **{**ONE_PER_GROUP, "union_candidate": True})
    more = crowd_submits(service, people=3, each=2)
    with service.db() as db:
        for c in db.table("corrections").rows_where("round_id = ?", [round_row(service, 2)["id"]]):
            organizer.hide(KEY, c["id"])
    assert more and run_round(organizer, worker)["status"] == "finished"
    assert any("union candidate was not trained" in n for n in notes(service, 2))
    assert round_row(service, 2)["state"] == "done"


def test_the_union_goes_on_from_its_last_round_while_nothing_is_crowned(round_world):
    """No candidate can be crowned (a win margin past any accuracy): round 2's union starts
    from round 1's (its bundle carries that adapter), and it trains as many example-passes as
    the group candidates together."""
    from crowd.config import TrainingSettings
    from crowd.rounds.bundle import ADAPTER_FILES

    service, organizer, worker = round_world
    organizer.update_campaign(
        KEY, **PREFERENCE, union_candidate=True, union_continues=True, win_margin=100
    )
    for _ in range(2):
        crowd_submits(service, people=6, each=2)
        assert run_round(organizer, worker)["status"] == "finished"
    first, second = (versions(service, round_row(service, n)["id"]) for n in (1, 2))
    union_one = next(v for v in first if v["kind"] == "union")
    union_two = next(v for v in second if v["kind"] == "union")
    assert round_row(service, 1)["improved"] == 0
    assert union_two["parent_id"] == union_one["id"]  # its own line, not the champion
    assert all(v["parent_id"] == round_row(service, 2)["champion_id"] for v in second[:-1])
    bundle, _ = bundle_of(service, 2)
    union = next(c for c in bundle.candidates if c.kind == "union")
    start = bundle.start_dir(union)
    assert union.start and start is not None and start != bundle.champion_dir
    installed = service.settings.data_dir / union_one["adapter_path"]
    assert all((start / f).read_bytes() == (installed / f).read_bytes() for f in ADAPTER_FILES)
    settings = TrainingSettings(epochs=1, min_examples=40)
    groups = [c for c in bundle.candidates if c.kind == "group"]

    def passes(candidate) -> int:
        n = len(bundle.examples_of(candidate))
        return n * settings.epochs_for(n, candidate.scale)

    assert union.scale == len(groups) == 3
    assert passes(union) >= sum(passes(c) for c in groups)
    # The last union's adapter is lost (a data folder restored without it): round 3's union
    # starts from the champion, says so, and the round goes on.
    import shutil

    union_two_dir = service.settings.data_dir / union_two["adapter_path"]
    shutil.rmtree(union_two_dir)
    crowd_submits(service, people=6, each=2)
    assert run_round(organizer, worker)["status"] == "finished"
    assert any("union adapter" in n and "is missing" in n for n in notes(service, 3))
    third, _ = bundle_of(service, 3)
    assert not next(c for c in third.candidates if c.kind == "union").start


def test_an_emotion_round_is_judged_in_looks_inside_the_job(round_world):
    """The sequential judge in the round job on the tiny model: the champion gets the most
    replies, a candidate dropped early fewer; the worker reaches the job's decision from the
    stored scores alone (else the round would not be done)."""
    service, organizer, worker = round_world
    organizer.update_campaign(
        KEY,
        **JOY,
        union_candidate=True,
        judge="sequential",
    )
    crowd_submits(service)
    assert run_round(organizer, worker)["status"] == "finished"
    done = round_row(service, 1)
    assert done["state"] == "done"
    with service.db() as db:
        replies = {
            e["model_version_id"]: e["n_items"]
            for e in db.query("SELECT * FROM evaluations WHERE round_id = ?", [done["id"]])
        }
    bundle, _ = bundle_of(service, 1)
    assert bundle.judging.judge == "sequential" and len(replies) == 5  # champion, 3 groups, union
    assert replies[done["champion_id"]] == max(replies.values())
    assert set(replies.values()) <= {4, 8}  # the looks of eval_samples 4 (crowd.rounds.judge)
