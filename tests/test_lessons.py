"""What a correction teaches (crowd.lessons), and the promise built on it: the export's training
files hold exactly what the rounds trained on."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from crowd.campaigns import utcnow
from crowd.export import export_dataset
from crowd.lessons import MalformedCorrection, lesson
from crowd.limits import Limits
from crowd.organizer import Organizer
from crowd.rounds.engine import build_engine
from crowd.rounds.worker import Worker
from crowd.service import CrowdService
from tests.apps import KEY
from tests.rounds import ONE_PER_GROUP

PROMPT = json.dumps([{"role": "user", "content": "Hi"}])


def row(kind: str, **fields) -> dict:
    return {"id": 1, "kind": kind, "prompt": PROMPT, "original": "Old.", **fields}


@pytest.mark.parametrize(
    "correction,sft,pair,kto",
    [
        (
            row("rewrite", rewrite="New!"),
            "New!",
            ("New!", "Old."),
            (("New!", True), ("Old.", False)),
        ),
        (row("rewrite", rewrite="Old."), "Old.", None, (("Old.", True),)),
        (
            row("choice", choice="a", other_reply="B."),
            "Old.",
            ("Old.", "B."),
            (("Old.", True), ("B.", False)),
        ),
        (
            row("choice", choice="b", other_reply="B."),
            "B.",
            ("B.", "Old."),
            (("B.", True), ("Old.", False)),
        ),
        (row("choice", choice="tie", other_reply="B."), None, None, ()),
        (
            row("choice", choice="both_bad", other_reply="B."),
            None,
            None,
            (("Old.", False), ("B.", False)),
        ),
        (row("rating", rating=1), "Old.", None, (("Old.", True),)),
        (row("rating", rating=-1), None, None, (("Old.", False),)),
        (row("emotion", emotion="joy"), "Old.", None, ()),
        (row("emotion", emotion="anger"), None, None, ()),
    ],
)
def test_each_kind_teaches_what_the_table_says(correction, sft, pair, kto):
    taught = lesson(correction, "emotion", "joy")
    assert (taught.sft_target, taught.pair, taught.kto) == (sft, pair, kto)
    assert taught.prompt == [{"role": "user", "content": "Hi"}]
    if correction["kind"] == "emotion":
        assert taught.emotion == ("Old.", correction["emotion"])


def test_a_target_label_teaches_only_in_an_emotion_campaign():
    assert lesson(row("emotion", emotion="joy"), "preference", None).sft_target is None


@pytest.mark.parametrize("prompt", ["not json", json.dumps([{"role": "robot", "content": "x"}])])
def test_a_malformed_prompt_is_named(prompt):
    with pytest.raises(MalformedCorrection, match="correction 1"):
        lesson(row("rating", rating=1, prompt=prompt), "emotion", "joy")


class RecordingTrainer:
    """The Trainer protocol: records what each group is trained on, then trains for real."""

    def __init__(self, inner):
        self.inner, self.sft, self.pairs = inner, [], []

    @property
    def settings(self):
        return self.inner.settings

    @settings.setter
    def settings(self, value):  # the round job sets the bundle's training settings
        self.inner.settings = value

    def train(self, **kwargs):
        self.sft += [example.messages for example in kwargs["sft"]]
        self.pairs += [(p.prompt, p.chosen, p.rejected) for p in kwargs["pairs"]]
        return self.inner.train(**kwargs)


def test_the_export_train_split_is_exactly_what_the_round_trained_on(settings, new_generation):
    settings = replace(settings, eval_samples=2)
    generation = new_generation(max_new_tokens=4)
    service = CrowdService(settings, generation, limits=Limits(submissions_per_minute=1000))
    organizer = Organizer(service)
    organizer.update_campaign(
        KEY,
        task="emotion",
        target_emotion="joy",
        training_mode="sft+dpo",
        min_corrections=1,
        heldout_share=0.25,
        **ONE_PER_GROUP,  # each correction trains once, in its group's candidate
    )
    engine = build_engine(settings, utcnow)
    kit = engine.runner.kit_for(None)  # the thread runner's models, as the job trains with them
    kit.trainer = recorder = RecordingTrainer(kit.trainer)
    worker = Worker(settings.db_path, lambda: engine, utcnow)
    for i in range(6):  # every kind, from six people spread over the groups
        token = service.join(f"Volunteer {i}", consent=True).token
        reply = list(service.send(token, None, f"Question {i}?"))[-1].message_id
        service.rewrite(token, reply, f"A joyful answer number {i}!")
        service.rate_reply(token, reply, 1 if i % 2 else -1)
        service.label(token, reply, "joy" if i % 3 else "anger")
        second = list(service.another(token, reply))[-1].message_id
        service.choose(token, reply, second, "ab"[i % 2] if i < 4 else "both_bad")
        unchanged = list(service.send(token, None, f"Again {i}?"))[-1]
        service.rewrite(token, unchanged.message_id, unchanged.text)
    organizer.close_round(KEY)
    assert worker.step()
    generation.close()

    out = settings.data_dir.parent / "export"
    export_dataset(settings.db_path, out)
    sft = [r["messages"] for r in _train_rows(out, "sft")]
    dpo = [
        (r["prompt"], r["chosen"][0]["content"], r["rejected"][0]["content"])
        for r in _train_rows(out, "dpo")
    ]
    assert recorder.sft and recorder.pairs
    same = partial(json.dumps, sort_keys=True)  # the bundle keeps its JSON's keys sorted
    assert Counter(map(same, sft)) == Counter(map(same, recorder.sft))
    assert Counter(map(same, dpo)) == Counter(map(same, recorder.pairs))


def _train_rows(folder: Path, name: str) -> list[dict]:
    rows = [json.loads(line) for line in (folder / f"{name}.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "train" and r["round"] == 1]
