"""`python -m crowd demo-round` end to end on the tiny model: its last line is the JSON summary."""

from __future__ import annotations

import json

from crowd.__main__ import main


def test_demo_round_prints_a_json_summary_last(tiny_model_dir, tmp_path, monkeypatch, capsys):
    for name, value in {
        "CROWD_BASE_MODEL": str(tiny_model_dir),
        "CROWD_DATA_DIR": str(tmp_path),
        "CROWD_DEVICE": "cpu",
        "CROWD_EVAL_SAMPLES": "2",
        "CROWD_MAX_NEW_TOKENS": "6",
        "CROWD_EPOCHS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["demo-round", "--data-dir", str(tmp_path / "demo"), "--volunteers", "6"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["round"] == 1 and summary["state"] == "done" and summary["job"] == "finished"
    assert set(summary["groups"]) == {"Amber", "Blue", "Coral"}
    assert summary["metric"] == "emotion_l2" and summary["champion"] is not None
    assert summary["improved"] == (summary["winner"] != "champion kept")
    assert not summary["improved"] or sum(summary["points"].values()) > 0
