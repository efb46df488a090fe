"""`python -m crowd simulate convergence` end to end on the tiny model and a handful of pool
items: the real worker and engine train, judge and crown; outputs; resuming; bad input."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from crowd.__main__ import main
from crowd.campaigns import utcnow
from crowd.emotions import GOEMOTIONS_LABELS
from crowd.scoring.scorers import load_scorer
from crowd.sim.convergence_data import Neighbourhood, StudyInputError, check_protocol, deal
from crowd.sim.convergence_rounds import ALWAYS_MOVE, Arm, open_campaign, submit_and_close
from crowd.sim.convergence_study import StudyConfig, _after_win, reduction_se
from storage import rounds as store
from storage.db import connect, migrate

ANGRY = [
    "This is infuriating, I hate it.",
    "Stop lying, you absolute clown.",
    "I'm so mad I could scream.",
    "What a disgusting, angry mess.",
    "Furious about this.",
]
SCARED = [
    "I'm terrified of the dark.",
    "This is so scary, I'm shaking.",
    "I fear the worst.",
    "Horror movies freak me out.",
    "That noise scared me.",
]


def write_hoods(path: Path) -> Path:
    rows = [{"target": "anger", "role": "target", "text": "I am absolutely furious!"}]
    rows += [{"target": "anger", "role": "neighbor", "text": t, "scores": {}} for t in ANGRY]
    rows += [{"target": "fear", "role": "target", "text": "I am so afraid."}]
    rows += [{"target": "fear", "role": "neighbor", "text": t} for t in SCARED]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def simulate(data: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [
        "simulate",
        "convergence",
        "--data",
        str(data),
        "--out",
        str(out),
        "--base-model",
        str(model),
        "--groups",
        "2",
        "--segments",
        "2,1",
        "--samples",
        "2",
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


def versions(out: Path) -> int:
    with connect(out / "data" / "crowd.db") as db:
        return db.table("model_versions").count


def test_the_study_runs_through_the_engine_and_resumes(tmp_path, tiny_model_dir, capsys):
    data, out = write_hoods(tmp_path / "hoods.jsonl"), tmp_path / "run"
    argv = simulate(data, out, tiny_model_dir, "--emotions", "anger")
    assert main(argv) == 0
    summary = last_json(capsys)
    result = json.loads((out / "emotions" / "anger.json").read_text())
    assert summary["reduction_pct"] == {"anger": result["reduction_pct"]}
    assert summary["median_reduction_pct"] == pytest.approx(result["reduction_pct"])
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["emotion"] for r in rows] == ["anger"] and float(rows[0]["single"]) > 0
    assert (out / "convergence.png").stat().st_size > 0

    with connect(out / "data" / "crowd.db") as db:
        multi = next(db.table("campaigns").rows_where("name = ?", ["anger/multi"]))
        first, second = store.rounds_of(db, multi["id"])[:2]
        # The engine crowned generation 1's best candidate; generation 2 trained from it ...
        assert first["state"] == second["state"] == "done" and first["improved"] == 1
        assert second["champion_id"] == first["winner_id"]
        children = [store.candidate_for(db, second["id"], g) for g in range(2)]
        assert all(c["parent_id"] == first["winner_id"] for c in children)
        # ... and the winner's segment left the pool: none of its items came back.
        winner_group = store.get_version(db, first["winner_id"])["group_index"]
        won = {
            c["rewrite"]
            for c in store.round_corrections(db, first["id"])
            if c["group_index"] == winner_group
        }
        later = {c["rewrite"] for c in store.round_corrections(db, second["id"])}
        assert len(won) == 2 and len(later) == 2 and not won & later
    assert [g["segment"] for g in result["multi_arm"]["generations"]] == [2, 1]
    assert [g["pool"] for g in result["multi_arm"]["generations"]] == [5, 3]

    # Killed after its rounds but before its result was written: the rerun takes the rounds
    # from the database (no model trained again) and judges the same models the same way.
    trained = versions(out)
    (out / "emotions" / "anger.json").unlink()
    assert main(argv) == 0
    again = last_json(capsys)
    assert versions(out) == trained
    assert again["reduction_pct"] == summary["reduction_pct"]

    # A finished emotion is not redone; a new one in the same run folder is added.
    assert main(simulate(data, out, tiny_model_dir, "--emotions", "anger,fear")) == 0
    both = last_json(capsys)
    assert both["reduction_pct"]["anger"] == summary["reduction_pct"]["anger"]
    assert set(both["reduction_pct"]) == {"anger", "fear"}
    # fear: each arm's first champion (the base), 1 single and 2 x 2 multi candidates
    assert versions(out) == trained + 2 + 1 + 4

    # More replies in the final judgement: both emotions are judged again, nothing trains.
    assert (
        main(
            simulate(data, out, tiny_model_dir, "--emotions", "anger,fear", "--final-samples", "5")
        )
        == 0
    )
    last_json(capsys)
    assert versions(out) == trained + 2 + 1 + 4
    rejudged = json.loads((out / "emotions" / "anger.json").read_text())
    assert rejudged["final_samples"] == 5 and rejudged["reduction_se_pct"] >= 0
    assert rejudged["multi_arm"] == result["multi_arm"]
    assert [r["final_samples"] for r in csv.DictReader(open(out / "results.csv"))] == ["5", "5"]


def test_a_job_left_queued_for_another_emotion_runs_first(tmp_path, tiny_model_dir, capsys):
    # A run killed right after closing fear's single round left its job queued; the rerun
    # starts with anger, whose job the worker would claim only after fear's.
    data, out = write_hoods(tmp_path / "hoods.jsonl"), tmp_path / "run"
    migrate(out / "data" / "crowd.db")
    arm = Arm("fear/single", "fear", "I am so afraid.", 1, ALWAYS_MOVE)
    campaign = open_campaign(out / "data" / "crowd.db", out / "data", arm, utcnow())
    submit_and_close(
        out / "data" / "crowd.db",
        campaign,
        1,
        {0: list(range(5))},
        SCARED,
        utcnow(),
        random.Random(0),
    )
    assert main(simulate(data, out, tiny_model_dir, "--emotions", "anger,fear")) == 0
    assert set(last_json(capsys)["reduction_pct"]) == {"anger", "fear"}
    with connect(out / "data" / "crowd.db") as db:
        assert {j["status"] for j in db.table("jobs").rows} == {"finished"}


def test_a_file_with_reference_scores_trains_the_runs_scorer(tmp_path, tiny_model_dir, capsys):
    labels = list(GOEMOTIONS_LABELS)

    def scores(label: str) -> dict:
        return {name: (0.9 if name == label else 0.1 / 27) for name in labels}

    rows = [
        {
            "target": "anger",
            "role": "target",
            "text": "I am absolutely furious!",
            "scores": scores("anger"),
        }
    ]
    rows += [
        {"target": "anger", "role": "neighbor", "text": t, "scores": scores("anger")} for t in ANGRY
    ]
    rows += [
        {"target": "anger", "role": "neighbor", "text": t, "scores": scores("fear")}
        for t in SCARED[:2]
    ]
    data, out = tmp_path / "scored.jsonl", tmp_path / "run"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(simulate(data, out, tiny_model_dir, "--emotions", "anger")) == 0
    last_json(capsys)
    assert json.loads((out / "run.json").read_text())["scorer"] == str(out / "scorer.npz")
    head = load_scorer(str(out / "scorer.npz"))
    assert head.score(["I am absolutely furious!"])[0].argmax() == labels.index("anger")


BAD_LINE = '{"target": "anger", "role": "neighbor", "text": "fine"}\n{"target": "anger", "role"\n'


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing file", "no such file"),
        ("emotion not in the file", "has no neighbourhood for 'joy'"),
        ("not an emotion", "unknown emotion 'happiness'"),
        ("malformed line", ":2: not JSON"),
        ("bad role", "'role' must be"),
        ("pool too small", "generation 2 needs 2 x 2"),
        ("other settings in the run folder", "holds a run with other settings"),
        ("negative --min-examples", "--min-examples -1: must be an integer from 0"),
        ("no final samples", "--final-samples must be at least 1"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, tiny_model_dir, capsys, case, message):
    data, out = write_hoods(tmp_path / "hoods.jsonl"), tmp_path / "run"
    extra = ["--emotions", "anger"]
    if case == "missing file":
        data = tmp_path / "nothing.jsonl"
    elif case == "emotion not in the file":
        extra = ["--emotions", "anger,joy"]
    elif case == "not an emotion":
        extra = ["--emotions", "happiness"]
    elif case == "malformed line":
        data.write_text(BAD_LINE)
    elif case == "bad role":
        data.write_text('{"target": "anger", "role": "expert", "text": "x"}\n')
    elif case == "pool too small":
        extra += ["--segments", "2,2"]  # 5 items: 2 x 2, then 2 x 2 of the 3 left
    elif case == "no final samples":
        extra += ["--final-samples", "0"]
    elif case == "negative --min-examples":
        extra += ["--min-examples", "-1"]
    elif case == "other settings in the run folder":
        out.mkdir()
        (out / "run.json").write_text(json.dumps({"samples": 50}))
    before = sorted(p.name for p in out.iterdir()) if out.exists() else None
    assert main(simulate(data, out, tiny_model_dir, *extra)) == 2
    assert message in capsys.readouterr().err
    assert (sorted(p.name for p in out.iterdir()) if out.exists() else None) == before


def test_dealing_is_disjoint_sized_and_reproducible():
    pool = list(range(100))
    segments = deal(pool, 3, 33, random.Random(1))
    items = [i for seg in segments.values() for i in seg]
    assert [len(s) for s in segments.values()] == [33, 33, 33] and len(set(items)) == 99
    assert deal(pool, 3, 33, random.Random(1)) == segments != deal(pool, 3, 33, random.Random(2))


def test_the_paper_protocol_just_fits_a_pool_of_100():
    hood = Neighbourhood("anger", ["t"], [f"n{i}" for i in range(100)])
    check_protocol(hood, 3, (33, 22, 15))  # 99 of 100, 66 of 67, 45 of 45
    hood.neighbours.pop()
    with pytest.raises(StudyInputError, match="generation 3 needs 3 x 15 = 45"):
        check_protocol(hood, 3, (33, 22, 15))


def test_the_reductions_standard_error_follows_both_judgements():
    assert reduction_se(1.0, 0.8, 0.0, 0.05) == pytest.approx(5.0)
    assert reduction_se(1.0, 0.8, 0.05, 0.0) == pytest.approx(4.0)  # 100 * 0.8 * 0.05 / 1
    assert reduction_se(0.0, 0.8, 0.05, 0.05) == 0.0


def test_the_union_candidate_competes_in_every_generation(tmp_path, tiny_model_dir, capsys):
    data, out = write_hoods(tmp_path / "hoods.jsonl"), tmp_path / "run"
    assert main(simulate(data, out, tiny_model_dir, "--emotions", "anger", "--union", "on")) == 0
    last_json(capsys)
    result = json.loads((out / "emotions" / "anger.json").read_text())
    generations = result["multi_arm"]["generations"]
    assert all(set(g["candidates"]) == {"0", "1", "union"} for g in generations)
    assert all(g["winner"] in g["candidates"] for g in generations)  # 'best': always moves
    with connect(out / "data" / "crowd.db") as db:
        single = next(db.table("campaigns").rows_where("name = ?", ["anger/single"]))
        assert single["union_candidate"] == 0  # one model on everything needs no union


def test_a_union_win_takes_every_segment_out_of_the_pool_until_it_runs_dry():
    config = StudyConfig("x", 2, (2, 2, 1), 2, "s", 0, "best", "m", 1, 1e-3, 6, 2)
    hood = Neighbourhood("anger", ["t"], [f"n{i}" for i in range(6)])
    segments = {0: [0, 1], 1: [2, 3]}
    assert _after_win(list(range(6)), segments, "1", config, 1, hood) == [0, 1, 4, 5]
    # the union learned both segments: 2 items left, too few for 2 groups of 2: all come back
    assert _after_win(list(range(6)), segments, "union", config, 1, hood) == list(range(6))
    assert _after_win(list(range(6)), segments, "union", config, 2, hood) == [4, 5]
