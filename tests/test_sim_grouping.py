"""`python -m crowd simulate grouping` (crowd.sim.grouping) and the simulate dispatcher."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from crowd.__main__ import main as crowd_main
from crowd.sim.grouping import Config, Setting, simulate
from crowd.sim.grouping_world import draw_world, load_users


def write_users(path: Path, n: int = 40, d: int = 5, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", *(f"dim{j}" for j in range(d))])
        for i, row in enumerate(rng.random((n, d))):
            writer.writerow([f"user{i}", *row])
    return path


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_simulate_grouping_writes_csv_plots_and_a_json_line(tmp_path, capsys) -> None:
    users, out = write_users(tmp_path / "users.csv"), tmp_path / "out"
    code = crowd_main(
        [
            "simulate",
            "grouping",
            "--users",
            str(users),
            "--n-users",
            "8",
            "--groups",
            "2",
            "--rounds",
            "15",
            "--runs",
            "2",
            "--grouping",
            "interleaved",
            "--metric",
            "l2",
            "--points",
            "shapley",
            "--seed",
            "0",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = last_json(capsys.readouterr().out)
    assert {"pearson", "spearman", "final_distance"} <= set(result)
    assert -1.0 <= result["pearson"] <= 1.0 and result["final_distance"] > 0
    for name in (
        "runs.csv",
        "settings.csv",
        "distances.csv",
        "distance.png",
        "pearson.png",
        "table.md",
    ):
        assert (out / name).stat().st_size > 0
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 2 and {r["points"] for r in runs} == {"shapley"}
    assert np.mean([float(r["pearson"]) for r in runs]) == pytest.approx(
        result["pearson"], abs=1e-4
    )


def test_sweep_compares_both_rules_on_the_same_runs(tmp_path, capsys) -> None:
    users, out = write_users(tmp_path / "users.csv"), tmp_path / "out"
    code = crowd_main(
        [
            "simulate",
            "grouping",
            "--users",
            str(users),
            "--n-users",
            "6,12",
            "--groups",
            "2,3",
            "--rounds",
            "30",
            "--runs",
            "3",
            "--grouping",
            "random,epsilon_greedy",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = last_json(capsys.readouterr().out)
    assert result["settings"] == 2 * 2 * 2 * 2
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    starts = {(r["n_users"], r["run"], r["points"]): r["start_distance"] for r in runs}
    assert all(
        starts[(n, run, "paper")] == starts[(n, run, "shapley")] for n, run, _ in starts
    )  # common random numbers: same crowd, expert, start
    # The project's rule tracks Shapley values; the group-rank rule cannot tell members apart.
    assert result["by_rule"]["shapley"]["min_pearson"] > 0.95
    assert result["by_rule"]["shapley"]["pearson"] > result["by_rule"]["paper"]["pearson"]


def test_simulated_points_never_go_negative(tmp_path) -> None:
    users = load_users(write_users(tmp_path / "users.csv", n=30))
    world = draw_world(users, 20, 1, np.random.default_rng(1))
    points, distances, _ = simulate(
        world, Setting(20, 4, "random", "l2", "shapley"), Config(rounds=20, runs=1), [0, 1]
    )
    assert points.min() >= 1.0 and len(distances) == 21


def test_users_from_jsonl_scores(tmp_path, capsys) -> None:
    rng = np.random.default_rng(2)
    jsonl = tmp_path / "scored.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps({"text": f"t{i}", "scores": {"joy": float(a), "anger": float(b)}}) + "\n"
            for i, (a, b) in enumerate(rng.random((12, 2)))
        )
    )
    users = tmp_path / "made" / "users.csv"
    code = crowd_main(
        [
            "simulate",
            "grouping",
            "--users-from",
            str(jsonl),
            "--users",
            str(users),
            "--n-users",
            "6",
            "--groups",
            "2",
            "--rounds",
            "5",
            "--runs",
            "1",
            "--points",
            "paper",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    assert load_users(users).shape == (12, 2)
    assert "wrote 12 users" in capsys.readouterr().out


def test_bad_users_file_is_refused_and_writes_nothing(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,a,b\nu1,0.1,0.2\nu2,oops,0.3\n")
    out = tmp_path / "out"
    code = crowd_main(["simulate", "grouping", "--users", str(bad), "--out", str(out)])
    assert code == 2
    assert "row 3" in capsys.readouterr().out
    assert not out.exists()


def test_too_few_users_is_refused(tmp_path, capsys) -> None:
    users, out = write_users(tmp_path / "users.csv", n=5), tmp_path / "out"
    code = crowd_main(
        ["simulate", "grouping", "--users", str(users), "--n-users", "10", "--out", str(out)]
    )
    assert code == 2 and "the file has 5" in capsys.readouterr().out
    assert not out.exists()


def test_simulate_dispatcher(capsys) -> None:
    assert crowd_main(["simulate", "chess"]) == 2
    assert "grouping" in capsys.readouterr().out
    if importlib.util.find_spec("crowd.sim.convergence") is None:
        assert crowd_main(["simulate", "convergence"]) == 2
        assert "not available" in capsys.readouterr().out


def test_more_groups_than_users_is_refused(tmp_path) -> None:
    users = write_users(tmp_path / "users.csv")
    with pytest.raises(SystemExit) as exit_:
        crowd_main(
            [
                "simulate",
                "grouping",
                "--users",
                str(users),
                "--n-users",
                "4",
                "--groups",
                "5",
                "--out",
                str(tmp_path / "out"),
            ]
        )
    assert exit_.value.code == 2 and not (tmp_path / "out").exists()
