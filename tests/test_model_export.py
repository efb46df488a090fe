"""The model export after a real round on the tiny model and a real SQLite file: the adapter and
merged folders load with PEFT and transformers and answer exactly as the app's champion does;
the card says how the model was made without naming anyone; the push goes to a fake hub; bad
input is refused with a clear message and nothing written."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
import yaml
from test_sync import FolderHub  # the backup push's fake hub: the same three calls

from crowd.campaigns import utcnow
from crowd.cli.export_model import main
from crowd.config import PACKAGED_MODEL, ModelSettings, Settings, TrainingSettings
from crowd.limits import Limits
from crowd.model_export.card import front_matter, render_model_card
from crowd.model_export.folder import export_model, export_model_zip
from crowd.models import build_tiny_model
from crowd.organizer import Organizer
from crowd.rounds.engine import build_engine
from crowd.rounds.worker import Worker
from crowd.service import CrowdService
from crowd.serving.protocol import Sampling
from storage import rounds as store
from storage.db import connect
from tests.apps import KEY
from tests.rounds import ONE_PER_GROUP

HAPPY = "I am so happy today, what a wonderful day!"
CHATS = [
    [{"role": "user", "content": "Question 0?"}],
    [{"role": "user", "content": "Tell me about your day."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Any plans?"}],
]
GREEDY = Sampling(max_new_tokens=12, temperature=0.0)


def make_settings(data_dir: Path, tiny_model_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        n_groups=3,
        model=ModelSettings(base_model=str(tiny_model_dir), device="cpu", max_new_tokens=12),
        # Strong enough that the champion's greedy replies differ from the base's (which are empty)
        training=TrainingSettings(epochs=4, batch_size=4, max_length=128, learning_rate=2e-2),
        organizer_secret=KEY,
        start_worker=False,
        eval_samples=4,
    )


def play_round(settings: Settings, service: CrowdService, people: int, each: int, **campaign):
    """`people` volunteers rewrite `each` replies, the organizer closes, the worker runs it."""
    organizer = Organizer(service)
    # The loop without peer review, a per-person cap or issue 28's candidates, as
    # tests/test_rounds.py runs it (tests/test_candidates.py exports a union's card).
    organizer.update_campaign(
        KEY, reviews_on=False, person_cap=1.0, **{**ONE_PER_GROUP, **campaign}
    )
    for i in range(people):
        session = service.join(f"Volunteer {i}", consent=True)
        for turn in range(each):
            reply = list(service.send(session.token, None, f"Question {turn}?"))[-1]
            service.rewrite(session.token, reply.message_id, HAPPY)
    organizer.close_round(KEY)
    assert Worker(settings.db_path, lambda: build_engine(settings, utcnow), utcnow).step()


@pytest.fixture(scope="module")
def crowned(tmp_path_factory, tiny_model_dir, new_generation):
    """A data dir whose round 1 crowned a group's candidate (round 2 is open), and the app's
    generation service serving it."""
    settings = make_settings(tmp_path_factory.mktemp("crowned") / "data", tiny_model_dir)
    generation = new_generation(max_new_tokens=12)
    service = CrowdService(
        settings, generation, limits=Limits(chats_per_minute=1000, submissions_per_minute=1000)
    )
    play_round(settings, service, 6, 3, task="preference", min_corrections=2, heldout_share=0.34)
    with connect(settings.db_path) as db:
        done = store.rounds_of(db, 1)[0]
    assert done["state"] == "done" and done["improved"] == 1, "the round crowned nobody"
    yield settings, service, done
    generation.close()


def champion_replies(service: CrowdService, version_id: int) -> list[str]:
    adapter = service.adapter_for(version_id)
    return [service.generation.reply(chat, adapter, GREEDY) for chat in CHATS]


def greedy_replies(model, tokenizer) -> list[str]:
    """Plain transformers greedy decoding, one chat at a time, with the exported template."""
    import torch

    replies = []
    for chat in CHATS:
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        batch = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                **batch,
                max_new_tokens=12,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        new = out[0, batch["input_ids"].shape[1] :]
        replies.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return replies


def test_the_adapter_loads_with_peft_and_answers_like_the_app(crowned, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings, service, done = crowned
    out = tmp_path / "adapter"
    facts = export_model(settings, out)
    assert facts.round_number == 1 and facts.version_id == done["winner_id"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, str(out)).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    expected = champion_replies(service, done["winner_id"])
    assert greedy_replies(model, tokenizer) == expected
    with model.disable_adapter():  # the adapter matters: the bare base answers otherwise
        assert greedy_replies(model, tokenizer) != expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no staging left over


def test_the_merged_folder_loads_with_transformers_and_answers_like_the_app(crowned, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings, service, done = crowned
    out = tmp_path / "merged"
    export_model(settings, out, round_number=1, merged=True)
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert (out / "adapter" / "adapter_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in name for name, _ in model.named_parameters())
    replies = greedy_replies(model, AutoTokenizer.from_pretrained(out))
    assert replies == champion_replies(service, done["winner_id"])
    card = (out / "README.md").read_text()
    assert yaml.safe_load(card.split("---")[1])["library_name"] == "transformers"


def test_the_card_tells_how_it_was_made_without_naming_anyone(crowned, tmp_path):
    settings, _, done = crowned
    out = tmp_path / "adapter"
    facts = export_model(settings, out)
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "peft" and meta["license"] == "cc-by-4.0"
    assert {"crowd-sft", "lora", "sft"} <= set(meta["tags"])
    assert "base_model" not in meta  # a local folder has no Hub id to name
    with connect(settings.db_path) as db:
        winner = store.get_version(db, done["winner_id"])
        trained = db.execute(
            "SELECT count(*), count(DISTINCT participant_id) FROM corrections "
            "WHERE round_id = ? AND group_index = ? AND split = 'train'",
            [done["id"], winner["group_index"]],
        ).fetchone()
        evaluations = list(db.query("SELECT * FROM evaluations WHERE round_id = ?", [done["id"]]))
    assert (facts.corrections, facts.volunteers) == trained
    row = f"| 1 | {winner['group_index']} | v{winner['id']} | {trained[1]} | {trained[0]} |"
    assert row in card
    assert len(evaluations) == 4  # the champion and three candidates, each in the table
    for e in evaluations:
        assert f"v{e['model_version_id']} | {e['value']:.4f} |" in card
    assert f"v{winner['id']} | " in card and "| crowned |" in card
    assert "Volunteer" not in card and "Volunteer" not in (out / "crowd-export.json").read_text()
    assert "pref_accuracy" in card and "](data/README.md)" in card
    assert "- learning rate (as the round trained): `0.02`" in card  # from the round's record
    chart = ET.fromstring((out / "metric.svg").read_text())
    circles = chart.findall("{http://www.w3.org/2000/svg}circle")
    assert len(circles) == len(evaluations)
    events = [json.loads(line) for line in (out / "data" / "events.jsonl").open()]
    assert events and {e["round"] for e in events} == {1}  # the same rounds as the model
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == settings.model.base_model


def test_the_packaged_base_is_named_by_its_hub_id(crowned, tmp_path):
    from dataclasses import replace

    from crowd.model_export.champion import find_champion, gather_facts

    settings, _, _ = crowned
    packaged = replace(settings, model=replace(settings.model, base_model=PACKAGED_MODEL))
    facts = gather_facts(packaged, find_champion(settings), merged=False, now=utcnow())
    meta = yaml.safe_load(front_matter(facts).strip("-\n"))
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "de-quantized" in render_model_card(facts)  # trained on the GGUF's weights


def test_the_zip_holds_the_same_files(crowned, tmp_path):
    settings, _, _ = crowned
    export_model(settings, tmp_path / "folder")
    zipped = export_model_zip(settings, tmp_path / "dl" / "model.zip")
    names = sorted(zipfile.ZipFile(zipped).namelist())
    folder = tmp_path / "folder"
    assert names == sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
    )
    assert {"README.md", "adapter_model.safetensors", "data/sft.jsonl", "metric.svg"} <= set(names)


# -- the command line and the push ------------------------------------------------------------


@pytest.fixture
def cli_env(crowned, monkeypatch):
    settings, _, _ = crowned
    monkeypatch.setenv("CROWD_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CROWD_BASE_MODEL", settings.model.base_model)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("CROWD_HF_TOKEN", raising=False)
    return monkeypatch


def test_the_push_goes_to_a_private_repo_unless_public_is_asked(cli_env, tmp_path, capsys):
    hub = FolderHub(tmp_path / "hub")
    cli_env.setenv("HF_TOKEN", "hf_test")
    tokens: list[str] = []

    def make_hub(token: str) -> FolderHub:
        tokens.append(token)
        return hub

    args = ["export-model", "--out", str(tmp_path / "one"), "--push-to-hub", "me/joy"]
    assert main(args, make_hub) == 0, capsys.readouterr().err
    assert tokens == ["hf_test"] and hub.private == {"me/joy": True}
    repo = tmp_path / "hub" / "model" / "me" / "joy"
    assert (repo / "adapter_model.safetensors").is_file() and (
        repo / "data" / "README.md"
    ).is_file()
    assert (repo / "README.md").read_text() == (tmp_path / "one" / "README.md").read_text()
    assert "round 1" in hub.commits[0]

    args = ["export-model", "--out", str(tmp_path / "two"), "--push-to-hub", "me/open", "--public"]
    assert main(args, make_hub) == 0
    assert hub.private["me/open"] is False and "(public)" in capsys.readouterr().out


def refused(args: list[str], message: str, capsys, make_hub=None, code: int = 2) -> None:
    assert main(["export-model", *args], make_hub) == code
    err = capsys.readouterr().err
    assert message in err, err


def test_bad_input_is_refused_with_a_message_and_nothing_written(
    cli_env, tmp_path, capsys, tiny_model_dir
):
    out = tmp_path / "out" / "model"
    refused(["--out", str(out), "--round", "7"], "unknown round 7", capsys)
    refused(["--out", str(out), "--round", "2"], "round 2 is not finished", capsys)
    refused(["--out", str(out), "--campaign", "9"], "unknown campaign 9", capsys)
    refused(["--out", str(out), "--push-to-hub", "me/joy"], "set HF_TOKEN", capsys)
    refused(["--out", str(out), "--public"], "--public only applies", capsys)
    other = build_tiny_model(tmp_path / "other-base", str(tiny_model_dir), seed=1)
    cli_env.setenv("CROWD_BASE_MODEL", str(other))
    refused(["--out", str(out)], "the champion was trained on", capsys)
    cli_env.setenv("CROWD_BASE_MODEL", str(tmp_path / "no-such-model"))
    refused(["--out", str(out)], "no such folder", capsys)
    cli_env.setenv("CROWD_BASE_MODEL", str(tiny_model_dir))
    cli_env.setenv("HF_TOKEN", "hf_test")
    refused(["--out", str(out), "--push-to-hub", "not a repo"], "OWNER/NAME", capsys)
    public = FolderHub(tmp_path / "hub", public=True)
    refused(
        ["--out", str(out), "--push-to-hub", "me/joy"], "add --public", capsys, lambda token: public
    )
    private = FolderHub(tmp_path / "hub2")
    private.create_repo("me/joy", repo_type="model", private=True, exist_ok=False)
    refused(
        ["--out", str(out), "--push-to-hub", "me/joy", "--public"],
        "is private",
        capsys,
        lambda token: private,
    )
    broken = FolderHub(tmp_path / "hub3", fail_uploads=1)
    refused(
        ["--out", str(out), "--push-to-hub", "me/joy"],
        "upload to me/joy failed",
        capsys,
        lambda token: broken,
        code=1,
    )
    assert public.commits == private.commits == broken.commits == []
    assert not out.exists() and not any((tmp_path / "out").iterdir())  # no staging left
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    refused(["--out", str(out)], "not empty", capsys)
    assert [p.name for p in out.parent.iterdir()] == ["model"]
    assert (out / "notes.txt").read_text() == "mine"


def test_no_finished_round_and_a_bare_base_champion_are_refused(
    tmp_path, tiny_model_dir, capsys, monkeypatch, new_generation
):
    settings = make_settings(tmp_path / "data", tiny_model_dir)
    monkeypatch.setenv("CROWD_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CROWD_BASE_MODEL", str(tiny_model_dir))
    out = tmp_path / "out"
    refused(["--out", str(out)], "there is no database", capsys)
    generation = new_generation(max_new_tokens=4)
    try:
        service = CrowdService(
            settings, generation, limits=Limits(chats_per_minute=1000, submissions_per_minute=1000)
        )
        refused(["--out", str(out)], "no round has finished yet", capsys)
        # Too few corrections: nobody trains, the round ends with the bare base as champion.
        play_round(settings, service, 3, 1, task="preference", min_corrections=5)
    finally:
        generation.close()
    refused(["--out", str(out)], "bare base model", capsys)
    refused(["--out", str(out), "--round", "1"], "bare base model", capsys)
    assert not out.exists()


# -- the organizer page's button --------------------------------------------------------------


def test_the_organizer_button_downloads_the_same_export_as_a_zip(crowned, tmp_path):
    import gradio as gr

    from crowd.ui.organizer import OrganizerHandlers

    settings, service, done = crowned
    handlers = OrganizerHandlers(Organizer(service))
    steps = handlers.export_model(KEY, "", False)
    path = next(steps)  # handed to Gradio, which copies it; the folder goes when the copy is done
    names = set(zipfile.ZipFile(path).namelist())
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= names
    assert "data/sft.jsonl" in names and "model.safetensors" not in names
    card = zipfile.ZipFile(path).read("README.md").decode()
    assert f"version v{done['winner_id']}, the champion after round 1" in card
    export_model(settings, tmp_path / "cli")
    assert names == {
        p.relative_to(tmp_path / "cli").as_posix()
        for p in (tmp_path / "cli").rglob("*")
        if p.is_file()
    }
    assert next(steps, None) is None and not Path(path).parent.exists()
    before = set(Path(path).parent.parent.glob("crowd-model-*"))
    for key, typed, message in (
        ("wrong", "", "Organizer access only"),
        (KEY, "7", "unknown round 7"),
        (KEY, "2", "not finished"),
        (KEY, "two", "whole number"),
    ):
        with pytest.warns(UserWarning, match=message):
            assert list(handlers.export_model(key, typed, False)) == [gr.skip()]
    assert set(Path(path).parent.parent.glob("crowd-model-*")) == before  # no folder left
