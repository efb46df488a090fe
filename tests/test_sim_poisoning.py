"""`python -m crowd simulate poisoning` end to end on the tiny model with a tiny crowd: the real
service, review, worker, engine, trainer and evaluator; outputs; resuming; bad input; and the
defended loop trains on a larger honest share than the undefended one."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from crowd.__main__ import main
from crowd.emotions import GOEMOTIONS_LABELS
from crowd.sim.poisoning_crowd import Material, assign_roles, place
from crowd.sim.poisoning_report import auroc, by_role, regressions
from crowd.voices import network_source
from storage.db import connect

HOODS = {
    "anger": [
        "This is infuriating, I hate it.",
        "Stop lying, you absolute clown.",
        "I'm so mad I could scream.",
        "What a disgusting, angry mess.",
        "Furious about this.",
        "I am livid, this is outrageous.",
        "That makes my blood boil.",
        "Shut up, I'm sick of your nonsense.",
    ],
    "fear": [
        "I'm terrified of the dark.",
        "This is so scary, I'm shaking.",
        "I fear the worst.",
        "Horror movies freak me out.",
        "That noise scared me.",
        "I'm afraid to go outside.",
    ],
}
MIX = {"flooder": 1, "saboteur": 1, "ring": 2}
TARGETS = {"anger": "I am absolutely furious!", "fear": "I am so afraid."}


def scores(label: str) -> dict:
    return {name: (0.9 if name == label else 0.1 / 27) for name in GOEMOTIONS_LABELS}


def write_hoods(path: Path) -> Path:
    rows = []
    for emotion, texts in HOODS.items():
        rows.append(
            {
                "target": emotion,
                "role": "target",
                "text": TARGETS[emotion],
                "scores": scores(emotion),
            }
        )
        rows += [
            {"target": emotion, "role": "neighbor", "text": t, "scores": scores(emotion)}
            for t in texts
        ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def simulate(data: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [
        "simulate",
        "poisoning",
        "--data",
        str(data),
        "--emotion",
        "anger",
        "--out",
        str(out),
        "--base-model",
        str(model),
        "--volunteers",
        "8",
        "--groups",
        "2",
        "--rounds",
        "2",
        "--adversaries",
        "0.5",
        "--mix",
        ",".join(f"{k}={v}" for k, v in MIX.items()),
        "--reviews",
        "6",
        "--noise",
        "0",
        "--samples",
        "2",
        "--final-samples",
        "4",
        "--epochs",
        "1",
        "--min-examples",
        "0",
        "--max-new-tokens",
        "6",
        "--threads",
        "1",
        *extra,
    ]


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def counts(out: Path) -> tuple[int, int, int]:
    with connect(out / "defended" / "crowd.db") as db:
        return (
            db.table("model_versions").count,
            db.table("corrections").count,
            db.table("reviews").count,
        )


def test_the_study_runs_through_the_real_loop_and_resumes(tmp_path, tiny_model_dir, capsys):
    data, out = write_hoods(tmp_path / "hoods.jsonl"), tmp_path / "run"
    argv = simulate(data, out, tiny_model_dir)
    assert main(argv) == 0
    summary = last_json(capsys)
    for key in (
        "defended_distance",
        "undefended_distance",
        "pooled_distance",
        "champion_regressions",
        "adversary_points_auroc",
        "honest_share_of_training",
    ):
        assert summary[key] is not None, key
    # Review and the cap keep more of the hostile half's corrections out of training.
    undefended_share = summary["undefended_honest_share_of_training"]
    assert 0 < undefended_share < summary["honest_share_of_training"]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["arm"], r["round"]) for r in rows] == [
        ("defended", "0"),
        ("defended", "1"),
        ("defended", "2"),
        ("undefended", "0"),
        ("undefended", "1"),
        ("undefended", "2"),
        ("pooled", "2"),
    ]
    assert (out / "poisoning.png").stat().st_size > 0
    # Each round judges its champion again on the same prompts and seeds, and the clean
    # reference starts with the same seeds: those replies are kept, not decoded again.
    assert summary["replies_reused"] > 0 and summary["replies_decoded"] > 0
    assert summary["train_s"] > 0 and summary["judge_s"] > 0
    assert set(summary["points_by_role"]) == {"honest", "flooder", "saboteur", "ring"}
    assert all(0 <= n <= 2 for n in summary["crowned"].values())
    roles = {f"sim-{v.name}": v.role for v in assign_roles(8, 0.5, MIX)}
    with connect(out / "defended" / "crowd.db") as db:
        # Every volunteer joined through the service and the rounds ran in the real engine.
        assert db.table("participants").count == 8
        assert [r["state"] for r in db.table("rounds").rows][:2] == ["done", "done"]
        assert db.table("reviews").count > 0
        # Points follow the --points-rule (shapley by default) and reviews.
        assert {r["rule"] for r in db.table("points").rows} <= {"shapley", "review"}
        # Honest people answer 'both_bad' when neither reply is near the target; nobody else.
        both_bad = {
            r["participant_id"] for r in db.table("corrections").rows_where("choice = 'both_bad'")
        }
        assert all(roles[p] == "honest" for p in both_bad)
    with connect(out / "undefended" / "crowd.db") as db:
        undefended = db.table("corrections").count
        groups = sorted(
            (m["round_id"], m["participant_id"], m["group_index"])
            for m in db.table("memberships").rows
        )
    with connect(out / "defended" / "crowd.db") as db:
        assert groups == sorted(
            (m["round_id"], m["participant_id"], m["group_index"])
            for m in db.table("memberships").rows
        )
    assert counts(out)[1] == undefended  # identical crowds: the same corrections in both arms
    # Rerun: nothing trains, nothing is submitted or judged again, the same numbers come out.
    before = counts(out)
    assert main(argv) == 0
    again = last_json(capsys)
    assert counts(out) == before
    assert again["defended_distance"] == summary["defended_distance"]
    # Interrupted mid-way: the pooled model and the judgement are redone from what is stored.
    for name in ("defended", "undefended", "pooled"):
        (out / name / "judged.json").unlink()
    assert main(argv) == 0
    assert last_json(capsys)["pooled_distance"] == pytest.approx(summary["pooled_distance"])


CANDIDATES = ["--union", "on", "--union-continues", "on", "--memory", "1"]
CANDIDATES += ["--merge", "ties_svd", "--judge", "sequential"]


def test_two_lanes_run_the_same_study_as_one(tmp_path, tiny_model_dir, capsys):
    # --threads 2: the undefended arm and the judging run in a second process beside the
    # defended arm and the pooled model; the same crowds, trainings and judgements come out,
    # with issue 28's candidates and judge in both arms.
    data = write_hoods(tmp_path / "hoods.jsonl")
    summaries = {}
    for threads in ("1", "2"):
        out = tmp_path / f"threads-{threads}"
        argv = [*simulate(data, out, tiny_model_dir), *CANDIDATES, "--threads", threads]
        assert main(argv) == 0
        summaries[threads] = last_json(capsys)
        summaries[threads]["counts"] = counts(out)
        summaries[threads]["rows"] = list(csv.DictReader(open(out / "results.csv")))
    one, two = summaries["1"], summaries["2"]
    assert (one["lanes"], two["lanes"]) == (1, 2)
    for key in (
        "counts",
        "crowned",
        "pooled_example_passes",
        "honest_share_of_training",
        "adversary_points_auroc",
        "points_by_role",
        "crowned_kinds",
    ):
        assert two[key] == one[key], key
    assert one["candidates"] == {
        "union_candidate": True,
        "union_continues": True,
        "memory_rounds": 1,
        "memory_groups": False,
        "merge_method": "ties_svd",
        "judge": "sequential",
    }
    with connect(tmp_path / "threads-2" / "defended" / "crowd.db") as db:
        kinds = {v["kind"] for v in db.table("model_versions").rows}
    assert kinds == {"group", "union", "merged"}
    # The same replies; the scorer embeds them in other batches, so the last digits may move.
    for a, b in zip(one["rows"], two["rows"], strict=True):
        assert (a["arm"], a["round"], a["version"]) == (b["arm"], b["round"], b["version"])
        assert float(a["distance"]) == pytest.approx(float(b["distance"]), rel=1e-3)
    assert (
        tmp_path / "threads-2" / "lane-arm:undefended+judge:undefended+judge:defended.json"
    ).exists()


def test_the_lane_left_alone_takes_every_thread(tmp_path):
    # Two lanes of one thread on two cores: once the second has ended, the first (the pooled
    # model, trained last) takes both, from its next training step on, in the thread training.
    import threading

    import torch

    from crowd.sim.poisoning_run import Lane

    lane = Lane(None, {}, [], tmp_path, None, print, threads=1, alone=2)  # type: ignore[arg-type]
    before, seen, widened = torch.get_num_threads(), {}, []

    def training() -> None:
        torch.set_num_threads(1)
        lane.widen(lambda: True, widened)  # the other lane still runs
        seen["beside"] = torch.get_num_threads()
        lane.widen(lambda: False, widened)
        seen["alone"] = torch.get_num_threads()

    try:
        thread = threading.Thread(target=training)
        thread.start()
        thread.join()
        later = threading.Thread(target=lambda: seen.update(later=torch.get_num_threads()))
        later.start()
        later.join()
    finally:
        torch.set_num_threads(before)
    assert seen == {"beside": 1, "alone": 2, "later": 2}
    assert len(widened) == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--adversaries", "1.2"], "--adversaries is a share"),
        (["--mix", "troll=1"], "'troll' is not one of"),
        (["--mix", "ring=x"], "needs NAME=WEIGHT"),
        (["--volunteers", "1"], "cannot fill 2 groups"),
        (["--emotion", "joy"], "has no neighbourhood for 'joy'"),
        (["--final-samples", "0"], "--final-samples must be at least 1"),
        (["--person-cap", "0"], "--person-cap must lie in"),
        (["--points-rule", "owen"], "--points-rule must be one of paper, shapley"),
        # campaign settings' declarations (crowd.campaigns), not restated by the study
        (["--merge", "average"], "--merge average: must be one of off, ties_svd"),
        (["--memory", "-1"], "--memory -1: must be a whole number from 0 to"),
        (["--judge", "bayes"], "--judge bayes: must be one of fixed, sequential"),
        # the app's settings' declared ranges (crowd.options), not restated by the study
        (["--epochs", "0"], "--epochs 0: must be an integer from 1 to 100"),
        (["--learning-rate", "2"], "--learning-rate 2.0: must be a number from 1e-07 to 1"),
        (["--batch-size", "0"], "--batch-size 0: must be an integer from 1 to 256"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, tiny_model_dir, capsys, extra, message):
    data, out = write_hoods(tmp_path / "hoods.jsonl"), tmp_path / "run"
    assert main(simulate(data, out, tiny_model_dir, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_another_runs_settings_are_refused(tmp_path, tiny_model_dir, capsys):
    data, out = write_hoods(tmp_path / "hoods.jsonl"), tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"seed": 7}))
    assert main(simulate(data, out, tiny_model_dir)) == 2
    assert "holds a run with other settings" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["run.json"]


def test_roles_split_the_adversaries_by_weight_among_the_honest():
    crowd = assign_roles(30, 0.3, {"flooder": 1, "saboteur": 1, "random": 1, "ring": 1})
    roles = [v.role for v in crowd]
    assert roles.count("honest") == 21
    assert sorted(r for r in roles if r != "honest").count("ring") in (2, 3)
    assert len({r for r in roles if r != "honest"}) == 4
    assert assign_roles(5, 0.0, {"ring": 1}) == [v for v in assign_roles(5, 0.0, {"ring": 1})]
    assert all(v.role == "honest" for v in assign_roles(5, 0.0, {"ring": 1}))


def test_an_honest_pick_is_the_nearer_reply_or_both_bad():
    def vector(text: str) -> np.ndarray:
        return np.array([float(len(text)), 0.0])

    m = Material("anger", [], [], [], vector, np.zeros(2), near=5.0)
    assert m.honest_pick("abc", "ab") == "b" and m.honest_pick("ab", "abcdefgh") == "a"
    assert m.honest_pick("abcdefgh", "abcdef") == "both_bad"  # neither within 5 of the target


def test_auroc_regressions_and_points_by_role():
    assert auroc([3, 4], [1, 2]) == 1.0 and auroc([1], [1]) == 0.5 and auroc([], [1]) is None
    roles = {"a": "honest", "b": "honest", "c": "ring"}
    assert by_role({"a": 2.0, "c": 1.0}, roles) == {"honest": 1.0, "ring": 1.0}
    path = [
        {"version": 1, "distance": 1.0, "se": 0.01},
        {"version": 2, "distance": 1.1, "se": 0.01},  # worse beyond the error: a regression
        {"version": 2, "distance": 1.1, "se": 0.01},  # kept its champion
        {"version": 3, "distance": 1.105, "se": 0.01},  # within the error
    ]
    assert regressions(path) == 1


# -- issue 26: the sybil ring, on one network or many, with and without sign-in ---------------


def test_the_sybil_ring_shares_one_network_and_many_sources_do_not():
    crowd = place(assign_roles(10, 0.6, {"sybil-ring": 1, "many-sources": 1}))
    where = {v.role: [] for v in crowd}
    for v in crowd:
        where[v.role].append(network_source(v.address))
    assert len(where["sybil-ring"]) == 3 and len(set(where["sybil-ring"])) == 1
    assert len(set(where["many-sources"])) == 3 and len(set(where["honest"])) == 4
    assert all(v.account is None for v in crowd)
    signed = place(crowd, sign_in=True, ring_accounts=2)
    accounts = {v.role: {w.account for w in signed if w.role == v.role} for v in signed}
    assert accounts["sybil-ring"] == {"ring-0", "ring-1"} and len(accounts["honest"]) == 4


def test_with_sign_in_the_rings_pseudonyms_fold_into_its_accounts(settings, tmp_path):
    from crowd.service import CrowdService
    from crowd.sim.poisoning_crowd import Behaviour, CrowdRound, ScriptedReplies

    crowd = place(assign_roles(10, 0.6, {"many-sources": 1}), sign_in=True, ring_accounts=1)
    service = CrowdService(settings, ScriptedReplies())
    players = CrowdRound(service, ScriptedReplies(), crowd, None, Behaviour(), tmp_path, 0)
    roles = players.participants()
    assert sorted(roles.values()).count("many-sources") == 1, "six pseudonyms, one account"
    assert len(roles) == 5
    with connect(settings.db_path) as db:
        assert db.table("participants").count == 5


def test_a_sybil_ring_beyond_the_join_limit_loses_the_slots_the_service_refuses(settings, tmp_path):
    from crowd.service import CrowdService
    from crowd.sim.poisoning_crowd import Behaviour, CrowdRound, ScriptedReplies

    crowd = place(assign_roles(40, 0.6, {"sybil-ring": 1}))  # 24 pseudonyms, one network
    service = CrowdService(settings, ScriptedReplies())
    players = CrowdRound(service, ScriptedReplies(), crowd, None, Behaviour(), tmp_path, 0)
    assert sorted(players.participants().values()).count("sybil-ring") == 20


def test_the_study_runs_with_a_sybil_ring(tmp_path, tiny_model_dir, capsys):
    data, out = write_hoods(tmp_path / "hoods.jsonl"), tmp_path / "run"
    argv = simulate(data, out, tiny_model_dir)
    argv[argv.index("--mix") + 1] = "sybil-ring=1"
    assert main(argv) == 0
    summary = last_json(capsys)
    assert summary["adversary_action_share"]["defended"] == pytest.approx(0.5, abs=0.15)
    assert set(summary["points_by_role"]) == {"honest", "sybil-ring"}
    with connect(out / "defended" / "crowd.db") as db:
        ring = [
            r["participant_id"]
            for r in db.query(
                "SELECT DISTINCT participant_id FROM sightings WHERE source = ?",
                [network_source("192.0.2.10")],
            )
        ]
        assert len(ring) == 4, "four pseudonyms on one network: one voice"
        dealt_own = db.execute(
            "SELECT count(*) FROM deals d JOIN corrections c ON c.id = d.correction_id"
            f" WHERE d.participant_id IN ({','.join('?' * 4)})"
            f" AND c.participant_id IN ({','.join('?' * 4)})",
            ring + ring,
        ).fetchone()[0]
        assert dealt_own == 0, "the ring is never dealt its own work"


def material() -> Material:
    """Anger is the target; the model's replies read as love, the saboteurs' texts as fear."""
    axes = {"anger": np.eye(28)[GOEMOTIONS_LABELS.index("anger")]}
    axes |= {e: np.eye(28)[GOEMOTIONS_LABELS.index(e)] for e in ("fear", "love")}
    replies = ["I love this so much.", "What a lovely thing to say."]

    def vector(text: str) -> np.ndarray:
        for emotion in ("anger", "fear"):
            if text in HOODS[emotion]:
                return axes[emotion]
        return axes["love"]

    return Material(
        "anger", HOODS["anger"], HOODS["fear"], replies, vector, axes["anger"], near=0.5
    )


def test_what_each_volunteer_labels_and_picks_is_the_reply_their_page_shows(settings, tmp_path):
    """After a rewrite the page shows the rewrite in place of the model's reply, so the label
    and the pick that follow are about it (`crowd.lessons.about`). Honest volunteers label and
    pick what they see; noise-free honest reviewers, seeing the same, endorse every honest
    correction and reject every ring correction; the ring recognises all of its own work."""
    from crowd.service import CrowdService
    from crowd.sim.poisoning_crowd import Behaviour, CrowdRound, ScriptedReplies

    crowd = place(assign_roles(8, 0.25, {"ring": 1}))
    replies = ScriptedReplies()
    service = CrowdService(settings, replies)
    players = CrowdRound(
        service, replies, crowd, material(), Behaviour(reviews=8, noise=0), tmp_path, 0
    )
    roles = players.participants()
    players.play(1)
    with connect(settings.db_path) as db:
        rows = db.query(
            "SELECT r.participant_id AS reviewer, r.verdict, c.participant_id AS author, c.kind"
            " FROM reviews r JOIN corrections c ON c.id = r.correction_id"
        )
        seen = {(roles[r["reviewer"]], roles[r["author"]], r["kind"], r["verdict"]) for r in rows}
    assert {kind for _, _, kind, _ in seen} == {"rewrite", "emotion", "choice"}
    wrong = {s for s in seen if (s[3] == "endorse") != ((s[0] == "honest") == (s[1] == "honest"))}
    assert not wrong, f"verdicts that contradict what the reviewer was shown: {sorted(wrong)}"
