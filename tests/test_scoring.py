"""The emotion scorers: the offline default (real MiniLM embeddings, a real head), the Hub scorer's
label mapping (on a tiny classifier built here), the metric helpers and the `scorer` CLI."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest

from crowd.emotions import GOEMOTIONS_LABELS
from crowd.scoring.head import HeadConfig
from crowd.scoring.scorers import (
    EmbeddingHeadScorer,
    EmotionScorer,
    HubScorer,
    load_scorer,
    mean_l2,
    one_hot,
    target_vector,
)

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".venv" / "test-cache"
SHARED = REPO.parent / "shared" / "data" / "goemotions"
NEIGHBOURHOODS = SHARED / "goemotions_neighborhoods.jsonl"


@pytest.fixture(scope="module")
def seed_scorer() -> EmbeddingHeadScorer:
    """The default scorer; its fit is cached on disk so later runs skip the ~900 seed texts."""
    return EmbeddingHeadScorer.from_seed(cache_dir=CACHE / "scorers")


def shared_records(n: int) -> list[dict]:
    if not NEIGHBOURHOODS.exists():
        pytest.skip(f"shared GoEmotions data not found at {NEIGHBOURHOODS}")
    with open(NEIGHBOURHOODS, encoding="utf-8") as f:
        return [json.loads(line) for line in itertools.islice(f, n)]


def top(scorer: EmotionScorer, text: str) -> str:
    return GOEMOTIONS_LABELS[int(scorer.score([text])[0].argmax())]


def test_labels_are_the_shared_datas_keys_in_order():
    record = shared_records(1)[0]
    assert tuple(record["scores"]) == GOEMOTIONS_LABELS
    assert len(GOEMOTIONS_LABELS) == 28


def test_scores_have_the_documented_shape_and_range(seed_scorer):
    assert isinstance(seed_scorer, EmotionScorer)
    vectors = seed_scorer.score(["What a lovely day.", "Where is the station?", "no"])
    assert vectors.shape == (3, 28) and vectors.dtype == np.float32
    assert np.all(vectors >= 0) and np.all(vectors <= 1)
    # The default serves a softmax: rows are distributions over the 28 emotions.
    np.testing.assert_allclose(vectors.sum(axis=1), 1.0, atol=1e-5)
    assert seed_scorer.score([]).shape == (0, 28)


def test_a_joyful_and_an_angry_sentence_land_on_sensible_labels(seed_scorer):
    joyful = "We just won the championship and I can't stop smiling, best feeling ever!"
    angry = "I am absolutely furious, they cheated us and I want to scream at them."
    assert top(seed_scorer, joyful) in {"joy", "excitement", "admiration", "pride", "amusement"}
    assert top(seed_scorer, angry) in {"anger", "annoyance", "disgust"}
    v_joy, v_angry = seed_scorer.score([joyful, angry])
    joy, anger = GOEMOTIONS_LABELS.index("joy"), GOEMOTIONS_LABELS.index("anger")
    assert v_joy[joy] > 5 * v_angry[joy] and v_angry[anger] > 5 * v_joy[anger]


def test_fit_on_a_few_texts_follows_their_labels():
    scorer = EmbeddingHeadScorer(HeadConfig(l2=1e-3, temperature=None))
    texts = [
        "I am scared of the dark.",
        "That noise terrifies me.",
        "I'm afraid of heights.",
        "I'm proud of my son.",
        "Proud of what we built.",
        "I'm so proud of myself today.",
    ]
    targets = np.stack([one_hot("fear")] * 3 + [one_hot("pride")] * 3)
    scorer.fit(texts, targets)
    fear, pride = GOEMOTIONS_LABELS.index("fear"), GOEMOTIONS_LABELS.index("pride")
    scared, proud = scorer.score(["Spiders frighten me.", "My daughter made me proud."])
    assert scared[fear] > scared[pride] and proud[pride] > proud[fear]
    with pytest.raises(ValueError, match="shape"):
        scorer.fit(texts, targets[:2])


def test_with_labels_moves_predictions_and_leaves_the_original_alone(seed_scorer):
    probe = "My old goldfish floated to the top of the tank this morning."
    before = seed_scorer.score([probe])[0]
    labelled = [
        "Our hamster died in the night.",
        "The vet said our cat would not wake up again.",
        "We buried the parrot under the apple tree.",
        "The old dog passed away at home.",
        "My rabbit died while I was at school.",
        "Our fish tank is empty now, he died.",
        "Goodbye little turtle, you lived a long life.",
        "My guinea pig is gone.",
    ]
    updated = seed_scorer.with_labels(labelled, ["grief"] * len(labelled))
    grief = GOEMOTIONS_LABELS.index("grief")
    assert updated.score([probe])[0][grief] > before[grief] + 0.05
    np.testing.assert_array_equal(seed_scorer.score([probe])[0], before)
    with pytest.raises(ValueError, match="unknown emotion"):
        seed_scorer.with_labels(["hm"], ["hunger"])


def test_save_and_load_give_identical_scores(seed_scorer, tmp_path):
    path = tmp_path / "head.npz"
    seed_scorer.save(path)
    texts = ["Thank you so much!", "This is disgusting.", "The bus leaves at six."]
    np.testing.assert_array_equal(
        EmbeddingHeadScorer.load(path).score(texts), seed_scorer.score(texts)
    )
    assert np.array_equal(load_scorer(str(path)).score(texts[:1]), seed_scorer.score(texts[:1]))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a head")
    with pytest.raises(ValueError, match="not a saved emotion head"):
        EmbeddingHeadScorer.load(junk)


@pytest.mark.parametrize("spec", ["nonsense", "hub:", "", "roberta.npz"])
def test_load_scorer_rejects_unknown_specs(spec, tmp_path):
    with pytest.raises(ValueError, match="unknown scorer"):
        load_scorer(spec, data_dir=tmp_path)


def test_default_spec_caches_the_seed_head_under_the_data_dir(seed_scorer, tmp_path):
    scorer = load_scorer("default", data_dir=tmp_path)
    assert list((tmp_path / "scorers").glob("emotion-seed-*.npz"))
    assert np.array_equal(scorer.score(["ok"]), seed_scorer.score(["ok"]))


def test_target_vector_and_mean_l2(seed_scorer):
    np.testing.assert_array_equal(target_vector(seed_scorer, [], "relief"), one_hot("relief"))
    refs = ["Phew, we made it.", "What a relief!"]
    np.testing.assert_allclose(
        target_vector(seed_scorer, refs, "relief"), seed_scorer.score(refs).mean(0)
    )
    vectors = np.stack([one_hot("joy"), one_hot("anger")])
    assert mean_l2(vectors, one_hot("joy")) == pytest.approx(np.sqrt(2) / 2)
    with pytest.raises(ValueError, match="unknown emotion"):
        one_hot("hunger")


def tiny_classifier(folder: Path, names: list[str]) -> Path:
    """A 1-layer BERT text classifier with the given label names, built and saved locally."""
    from transformers import BertConfig, BertForSequenceClassification

    from crowd.scoring.head import embedding_model

    tokenizer, _ = embedding_model()
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        problem_type="multi_label_classification",
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_hub_scorer_maps_a_models_labels_into_goemotions_order(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    names = list(GOEMOTIONS_LABELS)
    random.Random(0).shuffle(names)
    folder = tiny_classifier(tmp_path / "clf", names)
    texts = ["I love it", "go away"]
    vectors = HubScorer(str(folder)).score(texts)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(
            **AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")
        ).logits
    expected = torch.sigmoid(logits).numpy()[:, [names.index(label) for label in GOEMOTIONS_LABELS]]
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert not np.allclose(vectors, torch.sigmoid(logits).numpy(), atol=1e-5)  # order did change
    with pytest.raises(ValueError, match="missing"):
        HubScorer(str(tiny_classifier(tmp_path / "sst", ["NEGATIVE", "POSITIVE"])))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_cli_train_writes_a_loadable_head_and_eval_reports_agreement(tmp_path, capsys):
    from crowd.__main__ import main

    data = write_jsonl(tmp_path / "slice.jsonl", shared_records(40))
    out = tmp_path / "heads" / "slice.npz"
    assert main(["scorer", "train", "--data", str(data), "--out", str(out), "--no-seed"]) == 0
    assert isinstance(load_scorer(str(out)), EmbeddingHeadScorer)
    capsys.readouterr()
    assert main(["scorer", "eval", "--data", str(data), "--scorer", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["records"] == 40 and 0 <= result["top1"] <= 1


def test_cli_train_rejects_bad_records_and_writes_nothing(tmp_path, capsys):
    from crowd.__main__ import main

    record = shared_records(1)[0]
    del record["scores"]["grief"]
    data = write_jsonl(tmp_path / "bad.jsonl", [record])
    out = tmp_path / "head.npz"
    assert main(["scorer", "train", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1" in err and "grief" in err
    assert not out.exists()
