"""Reference data from the organizer page: a good file joins the held-out set (its emotion texts
become the engine's target), a bad row anywhere stores nothing and is named, the key is
required; empty id boxes are refused with a message. No model needed: the service has none."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from crowd.emotions import GOEMOTIONS_LABELS
from crowd.limits import Refused
from crowd.organizer import Organizer
from crowd.references import MAX_FILE_BYTES, MAX_ROWS
from crowd.rounds.record import emotion_target
from crowd.scoring.scorers import one_hot, target_vector
from crowd.service import CrowdService
from crowd.ui import build_app
from crowd.ui.organizer import OrganizerHandlers
from storage.db import connect
from tests.apps import KEY

SKIP = gr.skip()
JOY = ["What a wonderful day, I am so happy!", "Thank you, this made me so happy."]
PAIR = {
    "kind": "pair",
    "prompt": [{"role": "user", "content": "Any plans today?"}],
    "chosen": "A walk by the sea, then a good book.",
    "rejected": "No.",
}


class LexiconScorer:
    """A real EmotionScorer: each text's vector spreads over the labels whose words it uses."""

    labels = GOEMOTIONS_LABELS
    WORDS = {"joy": {"happy", "wonderful"}, "gratitude": {"thank", "thanks"}, "sadness": {"sad"}}

    def score(self, texts: list[str]) -> np.ndarray:
        vectors = np.full((len(texts), len(GOEMOTIONS_LABELS)), 0.01, dtype=np.float32)
        for row, text in enumerate(texts):
            words = set(re.findall(r"[a-z]+", text.lower()))
            for label, lexicon in self.WORDS.items():
                vectors[row, GOEMOTIONS_LABELS.index(label)] += len(words & lexicon)
        return vectors / vectors.sum(axis=1, keepdims=True)


@pytest.fixture
def handlers(settings) -> OrganizerHandlers:
    return OrganizerHandlers(Organizer(CrowdService(settings, None)))


def jsonl(tmp_path: Path, rows: list, name: str = "refs.jsonl") -> str:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def stored(handlers: OrganizerHandlers) -> list[dict]:
    with connect(handlers.organizer.service.settings.db_path) as db:
        return list(db.table("reference_texts").rows)


def engine_target(handlers: OrganizerHandlers, scorer: LexiconScorer) -> np.ndarray:
    """The emotion target a round closed now carries in its bundle (crowd.rounds.record)."""
    service = handlers.organizer.service
    campaign, _ = service.context()
    with service.db() as db:
        return emotion_target(db, campaign, scorer)


def test_a_good_file_loads_and_becomes_the_engines_emotion_target(handlers, tmp_path):
    scorer = LexiconScorer()
    target = handlers.organizer.service.context()[0]["target_emotion"]
    assert np.array_equal(engine_target(handlers, scorer), one_hot(target))
    path = jsonl(
        tmp_path,
        [
            {"kind": "emotion", "text": JOY[0], "label": "joy"},
            "",
            {"kind": "emotion", "text": f"  {JOY[1]}  "},
            PAIR,
        ],
    )
    summary, file_box = handlers.load_references(KEY, path)
    assert file_box is None
    assert "2 emotion text(s) (joy: 1, no label: 1), 1 preference pair(s)" in summary
    assert "mean scored vector" in summary
    texts = [r["text"] for r in stored(handlers) if r["kind"] == "emotion"]
    assert texts == JOY  # trimmed
    used = engine_target(handlers, scorer)
    assert np.allclose(used, target_vector(scorer, JOY, target))
    assert not np.allclose(used, one_hot(target))
    pair = next(r for r in stored(handlers) if r["kind"] == "pair")
    assert json.loads(pair["prompt"]) == PAIR["prompt"]


def test_loading_the_same_rows_again_adds_nothing(handlers, tmp_path):
    path = jsonl(tmp_path, [{"kind": "emotion", "text": JOY[0]}, PAIR])
    handlers.load_references(KEY, path)
    as_list = tmp_path / "refs.json"
    as_list.write_text(json.dumps([PAIR, {**PAIR, "prompt": None}]), encoding="utf-8")
    summary, _ = handlers.load_references(KEY, str(as_list))
    assert "1 emotion text(s) (no label: 1), 2 preference pair(s)" in summary
    assert len(stored(handlers)) == 3
    assert handlers.organizer.add_references(KEY, [PAIR, PAIR]) == 0


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"kind": "emotion", "text": "Joy!"', "not valid JSON"),
        ({"kind": "sarcasm", "text": "Sure."}, 'must be "emotion" or "pair"'),
        ({"kind": "emotion"}, "text must be text"),
        ({"kind": "emotion", "text": "   "}, "text is empty"),
        ({"kind": "emotion", "text": "Yay", "label": "glee"}, "not one of the 28"),
        ({"kind": "emotion", "text": "Yay", "labels": ["joy"]}, "Unknown field"),
        ({**PAIR, "chosen": ""}, "chosen reply is empty"),
        ({**PAIR, "rejected": PAIR["chosen"]}, "are the same"),
        ({**PAIR, "prompt": "Any plans today?"}, "list of 1-20 chat messages"),
        ({**PAIR, "prompt": [{"role": "bot", "content": "Hi"}]}, "Each prompt message"),
        ({**PAIR, "prompt": [{"role": "assistant", "content": "Hi"}]}, "last message"),
        (["emotion", "Yay"], "JSON object"),
    ],
)
def test_a_bad_line_anywhere_stores_nothing_and_is_named(handlers, tmp_path, bad, message):
    good = {"kind": "emotion", "text": JOY[0]}
    path = jsonl(tmp_path, [good, PAIR, "", bad, good])
    shown = re.escape(html.escape(message))  # toasts are HTML: the page escapes the message
    with pytest.warns(UserWarning, match=rf"Nothing was loaded\. Line 4\b.*{shown}"):
        assert handlers.load_references(KEY, path) == (SKIP, SKIP)
    assert stored(handlers) == []


def test_every_bad_row_is_counted_and_a_json_list_names_items(handlers, tmp_path):
    path = tmp_path / "refs.json"
    path.write_text(json.dumps([PAIR, {"kind": "x"}, {"kind": "pair"}]), encoding="utf-8")
    with pytest.warns(UserWarning, match=r"Item 2: .*\(1 more row with problems\.\)"):
        handlers.load_references(KEY, str(path))
    with pytest.raises(Refused, match="Row 2: "):
        handlers.organizer.add_references(KEY, [PAIR, {**PAIR, "prompt": []}])
    assert stored(handlers) == []


def test_the_key_and_a_file_are_required(handlers, tmp_path):
    path = jsonl(tmp_path, [{"kind": "emotion", "text": JOY[0]}])
    for key in (None, "", "wrong"):
        with pytest.warns(UserWarning, match="Organizer access only"):
            assert handlers.load_references(key, path) == (SKIP, SKIP)
        with pytest.raises(Refused, match="Organizer access only"):
            handlers.organizer.add_references(key, [{"kind": "emotion", "text": JOY[0]}])
        assert handlers.references(key) == SKIP
    with pytest.warns(UserWarning, match="Choose a file"):
        handlers.load_references(KEY, None)
    assert stored(handlers) == []


def test_oversized_files_are_refused(handlers, tmp_path):
    row = {"kind": "emotion", "text": JOY[0]}
    with pytest.warns(UserWarning, match=f"more than {MAX_ROWS:,} rows"):
        handlers.load_references(KEY, jsonl(tmp_path, [row] * (MAX_ROWS + 1)))
    big = tmp_path / "big.jsonl"
    big.write_bytes(b" " * (MAX_FILE_BYTES + 1))
    with pytest.warns(UserWarning, match="the limit is 5 MB"):
        handlers.load_references(KEY, str(big))
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="no rows"):
        handlers.load_references(KEY, str(blank))
    assert stored(handlers) == []


def test_empty_or_odd_id_boxes_are_refused_with_a_message(handlers):
    cancel = handlers.job_action("cancel")
    for empty in (None, "", "  "):
        with pytest.warns(UserWarning, match="Type the job id first"):
            assert cancel(KEY, empty) == SKIP
        with pytest.warns(UserWarning, match="Type the correction id first"):
            assert handlers.ask_hide(KEY, empty) == (SKIP, SKIP)  # nothing to confirm
        with pytest.warns(UserWarning, match="Type the correction id first"):
            assert handlers.hide(KEY, empty)[0] == SKIP
    for odd in ("abc", "0", "-3", "1.5"):
        with pytest.warns(UserWarning, match="whole number"):
            cancel(KEY, odd)
    handlers.organizer.close_round(KEY)
    jobs = cancel(KEY, " 1 ")
    assert list(jobs["status"]) == ["cancelled"]


def test_the_page_has_the_upload_and_empty_id_boxes(settings):
    service = CrowdService(settings, None)
    demo = build_app(service, Organizer(service), oauth=False)
    assert "organizer_references" in {fn.api_name for fn in demo.fns.values()}
    config = demo.get_config_file()
    boxes = {c["props"].get("label"): c for c in config["components"]}
    assert boxes["Reference rows (.jsonl or .json)"]["type"] == "file"
    for label in ("Job id", "Correction id"):
        assert boxes[label]["type"] == "textbox" and not boxes[label]["props"].get("value")


def test_texts_labelled_for_another_emotion_do_not_shape_the_target(handlers, tmp_path):
    scorer = LexiconScorer()
    target = handlers.organizer.service.context()[0]["target_emotion"]
    handlers.load_references(
        KEY,
        jsonl(
            tmp_path,
            [
                {"kind": "emotion", "text": JOY[0], "label": target},
                {"kind": "emotion", "text": "I am furious, this is outrageous!", "label": "anger"},
            ],
        ),
    )
    assert np.allclose(engine_target(handlers, scorer), target_vector(scorer, JOY[:1], target))
