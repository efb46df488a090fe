"""Emotion scorers: a text -> its 28-way GoEmotions vector, and the campaign metric built on it.

A scorer returns, per text, 28 values in [0, 1], columns in GOEMOTIONS_LABELS order. The reference
`scores` of SamLowe/roberta-base-go_emotions are independent sigmoids (rows sum to about 1.2, one
label usually near 0.9); the offline default serves a softmax (rows sum to 1) of the same shape,
which ranks candidates more like the reference does (see scoring_head.HeadConfig.temperature).
The emotion metric is the mean L2 distance of sampled replies' vectors to a target vector; lower
is better.

- `EmbeddingHeadScorer` (spec 'default'): the offline default. The packaged all-MiniLM-L6-v2
  embeds; a small head trained on `assets/emotion_seed.jsonl` (and optionally more data) maps the
  embedding to the 28 labels. No download.
- `HubScorer` (spec 'hub:<model id>'): any Hub text-classification model over the same labels,
  e.g. the paper's scorer; needs the Hub, or the model in the local cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from crowd.config import ASSETS
from crowd.emotions import GOEMOTIONS_LABELS
from crowd.scoring import head as scoring_head
from crowd.scoring.head import Head, HeadConfig

SEED_PATH = ASSETS / "emotion_seed.jsonl"

# A hand label becomes a soft vector on the reference scorer's scale: its top label sits near 0.9
# and unrelated labels near 0.005. Secondary labels of a multi-label seed line get 0.4.
PRIMARY, SECONDARY, FLOOR = 0.9, 0.4, 0.005
# Chosen with bench/scorer.py: a linear head, lightly regularised, served as a softmax at T=0.5.
DEFAULT_HEAD = HeadConfig(hidden=0, l2=1e-4, temperature=0.5)

# A memo of the seed fit per process, keyed by a hash of the seed file and DEFAULT_HEAD: a pure
# function of its key, so it is as good as a constant. Callers only ever get copies.
_SEED_FITS: dict[str, EmbeddingHeadScorer] = {}


@runtime_checkable
class EmotionScorer(Protocol):
    labels: tuple[str, ...]

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 28) float32 in [0, 1], columns in GOEMOTIONS_LABELS order."""
        ...


# --- vectors and the metric ----------------------------------------------------------------


def _label_index(label: str) -> int:
    if label not in GOEMOTIONS_LABELS:
        raise ValueError(
            f"unknown emotion {label!r}; expected one of: {', '.join(GOEMOTIONS_LABELS)}"
        )
    return GOEMOTIONS_LABELS.index(label)


def one_hot(label: str) -> np.ndarray:
    """(28,) float32: 1 at `label`, 0 elsewhere."""
    vec = np.zeros(len(GOEMOTIONS_LABELS), dtype=np.float32)
    vec[_label_index(label)] = 1.0
    return vec


def soft_target(labels: Sequence[str]) -> np.ndarray:
    """(28,) float32 training target for hand labels; the first one is the main emotion."""
    if not labels:
        raise ValueError("a labelled text needs at least one emotion")
    vec = np.full(len(GOEMOTIONS_LABELS), FLOOR, dtype=np.float32)
    for label in labels[1:]:
        vec[_label_index(label)] = SECONDARY
    vec[_label_index(labels[0])] = PRIMARY
    return vec


def target_vector(scorer: EmotionScorer, reference_texts: Sequence[str], label: str) -> np.ndarray:
    """(28,) the mean score of the reference texts, or one_hot(label) when there are none."""
    if len(reference_texts) == 0:
        return one_hot(label)
    return scorer.score(reference_texts).mean(axis=0).astype(np.float32)


def mean_l2(vectors: np.ndarray, target: np.ndarray) -> float:
    """Mean Euclidean distance of the rows of `vectors` (n, 28) to `target` (28,); n >= 1."""
    vectors = np.atleast_2d(vectors)
    if len(vectors) == 0:
        raise ValueError("mean_l2 needs at least one vector")
    return float(np.linalg.norm(vectors - target, axis=1).mean())


# --- the offline default -------------------------------------------------------------------


def read_seed(path: Path = SEED_PATH) -> tuple[list[str], np.ndarray]:
    """Texts and soft targets of a seed file: JSONL lines {"text": str, "labels": [str, ...]}."""
    texts, targets = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            texts.append(str(record["text"]))
            targets.append(soft_target(record["labels"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{lineno}: not a seed record ({exc})") from None
    return texts, np.stack(targets)


class EmbeddingHeadScorer:
    """all-MiniLM-L6-v2 embeddings -> a small trained head -> 28 emotion scores. Offline.

    `config.temperature` picks the output form (DEFAULT_HEAD: a softmax at T=0.5; None: 28
    independent sigmoids). Fitted heads are never mutated, so scorers may share them."""

    labels: tuple[str, ...] = GOEMOTIONS_LABELS

    def __init__(self, config: HeadConfig = DEFAULT_HEAD) -> None:
        self.config = config
        self._head: Head | None = None
        # The training set, as embeddings: `with_labels` refits on it plus new labels without
        # needing the original texts (a saved head carries it too).
        self._train_x = np.zeros((0, scoring_head.EMBED_DIM), dtype=np.float32)
        self._train_y = np.zeros((0, len(GOEMOTIONS_LABELS)), dtype=np.float32)

    @classmethod
    def from_seed(
        cls, cache_dir: Path | None = None, seed_path: Path = SEED_PATH
    ) -> EmbeddingHeadScorer:
        """The default scorer, trained on the seed set. The fit is memoised in this process and,
        when `cache_dir` is given, kept on disk (keyed by the seed file's content and config)."""
        key = hashlib.sha256(seed_path.read_bytes() + repr(DEFAULT_HEAD).encode()).hexdigest()[:16]
        cached = cache_dir / f"emotion-seed-{key}.npz" if cache_dir is not None else None
        if key not in _SEED_FITS:
            if cached is not None and cached.exists():
                _SEED_FITS[key] = cls.load(cached)
            else:
                texts, targets = read_seed(seed_path)
                scorer = cls(DEFAULT_HEAD)
                scorer.fit(texts, targets)
                _SEED_FITS[key] = scorer
        if cached is not None and not cached.exists():
            _SEED_FITS[key].save(cached)
        return _SEED_FITS[key].copy()

    def copy(self) -> EmbeddingHeadScorer:
        """A scorer with the same head and training set (heads are immutable; sharing is safe)."""
        twin = EmbeddingHeadScorer(self.config)
        twin._head, twin._train_x, twin._train_y = self._head, self._train_x, self._train_y
        return twin

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 28) float32 in [0, 1]."""
        if len(texts) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self.score_embeddings(scoring_head.embed(list(texts)))

    def score_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """`score` on texts already embedded with `scoring_head.embed` (benchmarks reuse them)."""
        if self._head is None:
            raise RuntimeError("this scorer has no head yet: call fit(), from_seed() or load()")
        return self._head.predict(embeddings)

    def fit(self, texts: Sequence[str], targets: np.ndarray) -> None:
        """Train the head on exactly these texts; targets: (n, 28) soft or one-hot, in [0, 1]."""
        targets = _check_targets(targets, len(texts))
        self.fit_embeddings(scoring_head.embed(list(texts)), targets)

    def fit_embeddings(self, embeddings: np.ndarray, targets: np.ndarray) -> None:
        """`fit` on texts already embedded with `scoring_head.embed` (benchmarks reuse them)."""
        targets = _check_targets(targets, len(embeddings))
        self._head = scoring_head.fit_head(embeddings, targets, self.config)
        self._train_x, self._train_y = embeddings.astype(np.float32), targets

    def with_labels(self, texts: Sequence[str], labels: Sequence[str]) -> EmbeddingHeadScorer:
        """A new scorer fitted on this one's training set plus `texts`, each hand-labelled with
        one emotion of GOEMOTIONS_LABELS (volunteers' labels between rounds). Self is unchanged."""
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        new_y = (
            np.stack([soft_target([label]) for label in labels]) if labels else self._train_y[:0]
        )
        new_x = scoring_head.embed(list(texts)) if texts else self._train_x[:0]
        scorer = EmbeddingHeadScorer(self.config)
        scorer.fit_embeddings(
            np.concatenate([self._train_x, new_x]), np.concatenate([self._train_y, new_y])
        )
        return scorer

    def save(self, path: Path) -> None:
        """Write the head (and its training set) to one .npz file."""
        if self._head is None:
            raise RuntimeError("nothing to save: this scorer has not been fitted")
        scoring_head.save_head(
            Path(path), self._head, self.labels, self.config, self._train_x, self._train_y
        )

    @classmethod
    def load(cls, path: Path) -> EmbeddingHeadScorer:
        """A scorer from a file `save` wrote; ValueError if it is not one."""
        head, labels, config, train_x, train_y = scoring_head.load_head(Path(path))
        if labels != GOEMOTIONS_LABELS:
            raise ValueError(f"{path}: head labels {labels} are not the GoEmotions labels")
        scorer = cls(config)
        scorer._head, scorer._train_x, scorer._train_y = head, train_x, train_y
        return scorer


def _check_targets(targets: np.ndarray, n: int) -> np.ndarray:
    targets = np.asarray(targets, dtype=np.float32)
    if targets.shape != (n, len(GOEMOTIONS_LABELS)):
        raise ValueError(
            f"targets must have shape ({n}, {len(GOEMOTIONS_LABELS)}), got {targets.shape}"
        )
    if not np.all((targets >= 0) & (targets <= 1)):
        raise ValueError("targets must lie in [0, 1]")
    return targets


# --- a Hub model ---------------------------------------------------------------------------


class HubScorer:
    """A Hugging Face text-classification model whose labels are the 28 GoEmotions labels, e.g.
    SamLowe/roberta-base-go_emotions. Scores are sigmoids of its logits, reordered into
    GOEMOTIONS_LABELS order. `model_id` is a Hub id (needs the Hub or its cache) or a folder."""

    labels: tuple[str, ...] = GOEMOTIONS_LABELS

    def __init__(self, model_id: str, device: str | int = -1, batch_size: int = 16) -> None:
        from transformers import pipeline

        self.model_id = model_id
        self.batch_size = batch_size
        self._pipe = pipeline("text-classification", model=model_id, device=device)
        id2label = self._pipe.model.config.id2label or {}
        names = {str(name).lower() for name in id2label.values()}
        missing = [label for label in GOEMOTIONS_LABELS if label not in names]
        if missing:
            raise ValueError(
                f"{model_id} does not predict the GoEmotions labels (missing: {', '.join(missing)})"
            )

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 28) float32 in [0, 1]."""
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if len(texts) == 0:
            return out
        # top_k=None: every label, not just the best; sigmoid: GoEmotions is multi-label.
        results = self._pipe(
            list(texts),
            top_k=None,
            function_to_apply="sigmoid",
            batch_size=self.batch_size,
            truncation=True,
        )
        for row, result in enumerate(results):
            for label, value in _label_scores(result):
                if label in GOEMOTIONS_LABELS:
                    out[row, GOEMOTIONS_LABELS.index(label)] = value
        return out


def _label_scores(result: object) -> list[tuple[str, float]]:
    """(label, score) of one text's pipeline result: with top_k=None, a list of {label, score}
    (transformers types a pipeline's result loosely, so this is where its shape is checked)."""
    if not isinstance(result, list):
        raise TypeError(f"a text-classification pipeline gave {type(result).__name__}, not a list")
    return [(str(item["label"]).lower(), float(item["score"])) for item in result]


def load_scorer(spec: str, data_dir: Path | None = None) -> EmotionScorer:
    """'default' (seed-trained head, cached under data_dir/scorers), 'hub:<model id>', or the
    path of a head saved by `EmbeddingHeadScorer.save` (relative paths may be under data_dir)."""
    spec = spec.strip()
    if spec == "default":
        return EmbeddingHeadScorer.from_seed(cache_dir=data_dir / "scorers" if data_dir else None)
    if spec.startswith("hub:") and spec[4:].strip():
        return HubScorer(spec[4:].strip())
    candidates = [Path(spec)] + ([data_dir / spec] if data_dir is not None else [])
    for path in candidates:
        if spec and path.is_file():
            return EmbeddingHeadScorer.load(path)
    raise ValueError(
        f"unknown scorer {spec!r}: use 'default', 'hub:<model id>' "
        "(e.g. hub:SamLowe/roberta-base-go_emotions) or the path of a saved head (.npz)"
    )
