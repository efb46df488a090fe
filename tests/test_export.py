"""The export: TRL-ready files that datasets and TRL really load, privacy, filters, bad input."""

from __future__ import annotations

import csv
import json
import sqlite3
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from sqlite_utils import Database

from crowd.cli.export import main
from crowd.export import ExportError, export_dataset, export_zip

T0 = "2026-11-02T10:00:00+00:00"
JSONL = ("sft", "dpo", "kto", "emotions", "events")


class Seed:
    """Builds a small campaign in a migrated database with sqlite-utils, one row at a time."""

    def __init__(self, db_path: Path) -> None:
        self.db = Database(db_path)
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.table("campaigns").insert(
            {
                "id": 1,
                "name": "Joyful replies",
                "task": "emotion",
                "target_emotion": "joy",
                "n_groups": 3,
                "licence": "CC-BY-4.0",
                "created_at": T0,
            }
        )
        self.db.table("model_versions").insert(
            {"id": 1, "campaign_id": 1, "status": "champion", "created_at": T0}
        )
        self.round(1, state="done")
        self.round(2, state="open")

    def round(self, number: int, state: str) -> None:
        self.db.table("rounds").insert(
            {
                "id": number,
                "campaign_id": 1,
                "number": number,
                "state": state,
                "champion_id": 1,
                "opened_at": T0,
            }
        )

    def person(self, pid: str, name: str, hf: str | None, share: int = 0, banned: bool = False):
        self.db.table("participants").insert(
            {
                "id": pid,
                "display_name": name,
                "hf_username": hf,
                "share_identity": share,
                "consented_at": T0,
                "banned_at": T0 if banned else None,
                "created_at": T0,
            }
        )

    def correction(self, kind: str, pid: str, round_id: int = 1, group: int = 0, **fields) -> int:
        """A conversation with a user turn, reply A and reply B, and one correction of reply A."""
        conv = (
            self.db.table("conversations")
            .insert(
                {
                    "participant_id": pid,
                    "round_id": round_id,
                    "group_index": group,
                    "created_at": T0,
                }
            )
            .last_pk
        )
        user = fields.pop("user", f"Say something, {kind}")
        reply_a = fields.pop("original", f"Reply A to {user}")
        reply_b = fields.pop("reply_b", f"Reply B to {user}")
        messages = self.db.table("messages")
        messages.insert(
            {
                "conversation_id": conv,
                "position": 0,
                "role": "user",
                "content": user,
                "created_at": T0,
            }
        )
        a = messages.insert(
            {
                "conversation_id": conv,
                "position": 1,
                "role": "assistant",
                "content": reply_a,
                "model_version_id": 1,
                "created_at": T0,
            }
        ).last_pk
        b = messages.insert(
            {
                "conversation_id": conv,
                "position": 1,
                "role": "assistant",
                "content": reply_b,
                "model_version_id": 1,
                "alternative_of": a,
                "created_at": T0,
            }
        ).last_pk
        prompt = json.dumps(
            [{"role": "system", "content": "Be kind."}, {"role": "user", "content": user}]
        )
        row = {
            "kind": kind,
            "participant_id": pid,
            "round_id": round_id,
            "group_index": group,
            "message_id": a,
            "other_message_id": b if kind == "choice" else None,
            "other_reply": reply_b if kind == "choice" else None,  # B as the page showed it
            "model_version_id": 1,
            "prompt": prompt,
            "original": reply_a,
            "shown": reply_a,
            "created_at": T0,
            **fields,
        }
        return self.db.table("corrections").insert(row).last_pk


@pytest.fixture
def seeded(db_path: Path) -> Seed:
    s = Seed(db_path)
    s.person("alice", "Alice Liddell", "alice-hf", share=1)
    s.person("bob", "Bob Secretname", "bob-secret-hf")
    s.person("carol", "Carol Banned", None, banned=True)
    s.correction("rewrite", "alice", rewrite="What a lovely day!")  # sft, dpo, kto x2
    s.correction("rewrite", "bob", original="Same.", rewrite="Same.")  # sft, kto x1, no dpo
    s.correction("choice", "bob", choice="a")  # sft, dpo, kto x2
    s.correction("choice", "alice", group=1, choice="b", user="pick b")  # sft, dpo, kto x2
    s.correction("choice", "alice", choice="tie")  # nothing but events
    s.correction("choice", "bob", group=1, choice="both_bad")  # kto x2
    s.correction("emotion", "bob", emotion="joy")  # emotions, and sft: joy is the target
    s.correction("rating", "alice", rating=1)  # kto, and sft: a thumbs-up teaches the reply
    s.correction("rating", "bob", group=2, rating=-1)  # kto
    s.correction("rewrite", "bob", rewrite="withdrawn", undone_at=T0)  # events only
    s.correction("rewrite", "bob", rewrite="spam spam", hidden_at=T0)  # left out
    s.correction("rewrite", "carol", rewrite="banned person's text")  # left out
    s.correction("rewrite", "alice", round_id=2, group=2, rewrite="Round two joy", split="heldout")
    evaluations = s.db.table("evaluations")
    for mv, group, value in ((1, None, 0.9), (2, 0, 0.7), (3, 1, 0.5)):
        if mv > 1:
            s.db.table("model_versions").insert(
                {
                    "id": mv,
                    "campaign_id": 1,
                    "round_id": 1,
                    "group_index": group,
                    "parent_id": 1,
                    "status": "champion" if mv == 3 else "retired",
                    "created_at": T0,
                }
            )
        evaluations.insert(
            {
                "round_id": 1,
                "model_version_id": mv,
                "group_index": group,
                "metric": "emotion_l2",
                "value": value,
                "n_items": 10,
                "created_at": T0,
            }
        )
    s.db.execute("UPDATE rounds SET winner_id = 3, improved = 1 WHERE id = 1")
    for pid, amount in (("alice", 2.0), ("bob", 1.0), ("carol", 1.0)):
        s.db.table("points").insert(
            {
                "round_id": 1,
                "participant_id": pid,
                "group_index": 0,
                "amount": amount,
                "rule": "paper",
                "reason": "{}",
                "created_at": T0,
            }
        )
    s.db.conn.commit()
    return s


def load(folder: Path, name: str) -> list[dict]:
    from datasets import load_dataset

    dataset = load_dataset("json", data_files=str(folder / f"{name}.jsonl"), split="train")
    return list(dataset)


def test_every_jsonl_loads_with_datasets_and_holds_the_right_rows(seeded, db_path, tmp_path):
    out = tmp_path / "export"
    counts = export_dataset(db_path, out, salt="fixed")
    rows = {name: load(out, name) for name in JSONL}
    # sft holds what a round trains on (crowd.lessons): since issue 11 that includes the
    # thumbs-up reply and the reply labelled with the target emotion (5 before).
    assert {name: len(rows[name]) for name in JSONL} == {
        "sft": 7,
        "dpo": 4,
        "kto": 13,
        "emotions": 1,
        "events": 11,
    }
    assert {name: counts[name] for name in JSONL} == {n: len(r) for n, r in rows.items()}
    by_text = {r["messages"][-1]["content"]: r for r in rows["sft"]}
    assert by_text["What a lovely day!"]["messages"][:2] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Say something, rewrite"},
    ]
    assert "Reply B to pick b" in by_text  # choice b: the chosen reply is B
    pick_b = next(r for r in rows["dpo"] if r["chosen"][0]["content"] == "Reply B to pick b")
    assert pick_b["rejected"] == [{"role": "assistant", "content": "Reply A to pick b"}]
    assert pick_b["prompt"][-1] == {"role": "user", "content": "pick b"}
    assert "Same." not in [r["chosen"][0]["content"] for r in rows["dpo"]]
    labels = [(r["completion"][0]["content"], r["label"]) for r in rows["kto"]]
    assert labels.count(("Reply A to Say something, rating", True)) == 1
    assert ("Reply A to Say something, rewrite", False) in labels
    assert rows["emotions"][0]["label"] == "joy"
    assert rows["emotions"][0]["text"] == "Reply A to Say something, emotion"
    assert {r["split"] for r in rows["sft"]} == {"train", "heldout"}


def test_undone_corrections_are_events_only_and_moderated_ones_are_left_out(
    seeded, db_path, tmp_path
):
    out = tmp_path / "export"
    export_dataset(db_path, out)
    events = load(out, "events")
    undone = [e for e in events if e["undone"]]
    assert [e["rewrite"] for e in undone] == ["withdrawn"]
    everything = "".join(p.read_text() for p in out.iterdir() if p.suffix in (".jsonl", ".csv"))
    assert "withdrawn" not in (out / "sft.jsonl").read_text()
    assert "spam spam" not in everything and "banned person" not in everything
    assert len(list(csv.DictReader((out / "points.csv").open()))) == 2  # carol's left out

    export_dataset(db_path, out, include_hidden=True, include_banned=True)
    events = load(out, "events")
    assert any(e["hidden"] and e["rewrite"] == "spam spam" for e in events)
    assert any(e["participant_banned"] for e in events)
    training = "".join((out / f"{n}.jsonl").read_text() for n in ("sft", "dpo", "kto"))
    assert "spam spam" not in training and "banned person" not in training
    assert len(list(csv.DictReader((out / "points.csv").open()))) == 3


def test_a_hidden_person_is_left_out_like_a_banned_one(seeded, db_path, tmp_path):
    seeded.db.execute("UPDATE participants SET hidden_at = ? WHERE id = 'alice'", [T0])
    seeded.db.conn.commit()
    out = tmp_path / "export"
    export_dataset(db_path, out)
    everything = "".join(p.read_text() for p in out.iterdir() if p.suffix in (".jsonl", ".csv"))
    assert "What a lovely day!" not in everything and "Round two joy" not in everything
    assert "Same." in (out / "sft.jsonl").read_text()  # bob's data stays
    assert len(list(csv.DictReader((out / "points.csv").open()))) == 1  # bob's alone

    export_dataset(db_path, out, include_banned=True)
    events = [e["rewrite"] for e in load(out, "events")]
    assert "What a lovely day!" in events  # an event, flagged by its absence from training
    training = "".join((out / f"{n}.jsonl").read_text() for n in ("sft", "dpo", "kto"))
    assert "What a lovely day!" not in training
    assert len(list(csv.DictReader((out / "points.csv").open()))) == 3


def test_participants_are_pseudonymous_unless_they_opted_in(seeded, db_path, tmp_path):
    export_dataset(db_path, tmp_path / "one", salt="salt-1", include_banned=True)
    export_dataset(db_path, tmp_path / "two", salt="salt-2")
    text = "".join(p.read_text(errors="ignore") for p in (tmp_path / "one").iterdir())
    for secret in ("bob-secret-hf", "Bob Secretname", "Carol Banned", '"bob"', '"carol"'):
        assert secret not in text
    assert "alice-hf" in text and "Alice Liddell" in text  # she opted in
    one, two = load(tmp_path / "one", "events"), load(tmp_path / "two", "events")
    bob_one = {e["participant"] for e in one if e["kind"] == "emotion"}
    assert len(bob_one) == 1  # stable within an export
    assert {e["participant"] for e in one if e["kind"] == "rating" and e["group"] == 2} == bob_one
    assert bob_one.isdisjoint({e["participant"] for e in two})  # unlinkable across exports
    points = list(csv.DictReader((tmp_path / "one" / "points.csv").open()))
    assert {p["participant"] for p in points} == {e["participant"] for e in one}


def test_filters_by_round_and_group(seeded, db_path, tmp_path):
    out = tmp_path / "export"
    export_dataset(db_path, out, rounds=[2])
    assert [e["round"] for e in load(out, "events")] == [2]
    export_dataset(db_path, out, rounds=[1], groups=[1, 2])
    events = load(out, "events")
    assert sorted({(e["round"], e["group"]) for e in events}) == [(1, 1), (1, 2)]
    rounds = list(csv.DictReader((out / "rounds.csv").open()))
    assert [(r["group"], r["role"], r["winner"]) for r in rounds] == [
        ("", "champion", "0"),
        ("1", "candidate", "1"),
        ("2", "group", "0"),
    ]
    assert rounds[1]["metric"] == "emotion_l2" and rounds[1]["corrections"] == "2"


def test_parquet_twins_match_the_jsonl(seeded, db_path, tmp_path):
    out = tmp_path / "export"
    export_dataset(db_path, out, salt="s")
    for name in JSONL:
        table = pq.read_table(out / f"{name}.parquet")
        assert table.to_pylist() == [json.loads(line) for line in (out / f"{name}.jsonl").open()]


def test_dataset_card_has_front_matter_counts_and_usage(seeded, db_path, tmp_path):
    out = tmp_path / "export"
    counts = export_dataset(db_path, out)
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["license"] == "cc-by-4.0"
    assert {c["config_name"]: c["data_files"][0]["path"] for c in meta["configs"]} == {
        name: f"{name}.parquet" for name in JSONL
    }
    assert f"| `sft.jsonl` / `sft.parquet` | {counts['sft']} |" in card
    assert "Joyful replies" in card and "joy" in card
    assert "load_dataset" in card and "DPOTrainer" in card
    assert "| 1 | done | yes | 1 |" in card  # round 1 won by group 1


def test_bad_input_is_refused_with_exit_code_2_and_writes_nothing(
    seeded, db_path, tmp_path, capsys
):
    out = tmp_path / "out" / "export"
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    cases = [
        (["--db", str(tmp_path / "missing.db")], "no database"),
        (["--db", str(empty)], "not a migrated"),
        (["--db", str(garbage)], "cannot read"),
        (["--db", str(db_path), "--rounds", "1,7"], "unknown round 7"),
        (["--db", str(db_path), "--groups", "5"], "unknown group 5"),
        (["--db", str(db_path), "--campaign", "9"], "unknown campaign 9"),
    ]
    for args, message in cases:
        assert main(["export", "--out", str(out), *args]) == 2
        assert message in capsys.readouterr().err
        assert not out.parent.exists()
    assert not (tmp_path / "missing.db").exists()


def test_an_existing_export_is_replaced_but_a_foreign_folder_is_refused(seeded, db_path, tmp_path):
    out = tmp_path / "export"
    export_dataset(db_path, out, rounds=[2])
    export_dataset(db_path, out)
    assert len(load(out, "events")) == 11
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "export"]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="notes.txt"):
        export_dataset(db_path, out)
    assert (out / "notes.txt").read_text() == "mine"


def test_cli_reads_the_data_dir_from_settings_and_zip_holds_the_same_files(
    seeded, db_path, tmp_path, monkeypatch
):
    monkeypatch.setenv("CROWD_DATA_DIR", str(db_path.parent))
    assert main(["export", "--out", str(tmp_path / "cli")]) == 0
    zipped = export_zip(db_path, tmp_path / "dl" / "export.zip")
    names = sorted(zipfile.ZipFile(zipped).namelist())
    assert names == sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert len(names) == 13


def test_one_step_of_trl_sft_and_dpo_on_the_export(seeded, db_path, tmp_path, tiny_model_dir):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    out = tmp_path / "export"
    export_dataset(db_path, out)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    common = dict(
        max_steps=1,
        per_device_train_batch_size=2,
        bf16=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    for trainer_cls, config_cls, name in (
        (SFTTrainer, SFTConfig, "sft"),
        (DPOTrainer, DPOConfig, "dpo"),
    ):
        data = load_dataset("json", data_files=str(out / f"{name}.jsonl"), split="train")
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        before = next(model.parameters()).detach().clone()
        trainer = trainer_cls(
            model=model,
            processing_class=tokenizer,
            train_dataset=data,
            args=config_cls(output_dir=str(tmp_path / name), max_length=128, **common),
        )
        result = trainer.train()
        assert result.global_step == 1
        assert result.training_loss == result.training_loss  # not NaN
        assert not next(model.parameters()).detach().equal(before)
