"""`python -m crowd scorer ...`: train an offline emotion head on scored texts, or measure how
well a scorer agrees with reference scores.

  python -m crowd scorer train --data FILE [--data FILE ...] --out HEAD.npz [--no-seed]
  python -m crowd scorer eval --data FILE [--data FILE ...] [--scorer SPEC]

Data files are JSONL records with `text` and `scores` (a mapping of all 28 GoEmotions labels to
probabilities), the format of the shared GoEmotions data; other fields are ignored.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from crowd.emotions import GOEMOTIONS_LABELS
from crowd.scoring.head import HeadConfig
from crowd.scoring.scorers import (
    DEFAULT_HEAD,
    EmbeddingHeadScorer,
    EmotionScorer,
    load_scorer,
    read_seed,
)


def read_scored(path: Path) -> tuple[list[str], np.ndarray]:
    """Texts and (n, 28) reference vectors of a JSONL file; ValueError naming the bad line."""
    texts, vectors = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                text, vector = _scored_record(json.loads(line))
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from None
            texts.append(text)
            vectors.append(vector)
    if not texts:
        raise ValueError(f"{path}: no records")
    return texts, np.stack(vectors)


def _scored_record(record: dict) -> tuple[str, np.ndarray]:
    text, scores = record.get("text"), record.get("scores")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("record needs a non-empty 'text'")
    if not isinstance(scores, dict):
        raise ValueError("record needs 'scores', a mapping of emotion to probability")
    missing = [label for label in GOEMOTIONS_LABELS if label not in scores]
    if missing:
        raise ValueError(f"'scores' lacks {', '.join(missing)}")
    vector = np.array([float(scores[label]) for label in GOEMOTIONS_LABELS], dtype=np.float32)
    if not np.all((vector >= 0) & (vector <= 1)):
        raise ValueError("scores must lie in [0, 1]")
    return text, vector


def agreement(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Top-1 agreement (share of rows whose highest label matches) and mean row L2 distance."""
    return {
        "top1": float((predicted.argmax(1) == reference.argmax(1)).mean()),
        "mean_l2": float(np.linalg.norm(predicted - reference, axis=1).mean()),
    }


def train(data: Sequence[Path], out: Path, with_seed: bool, config: HeadConfig) -> dict:
    """Fit a head on the data files (plus the seed set) and save it; returns a summary."""
    texts: list[str] = []
    targets: list[np.ndarray] = []
    for path in data:
        file_texts, file_vectors = read_scored(path)  # validate every file before any work
        texts += file_texts
        targets.append(file_vectors)
    if with_seed:
        seed_texts, seed_targets = read_seed()
        texts += seed_texts
        targets.append(seed_targets)
    scorer = EmbeddingHeadScorer(config)
    scorer.fit(texts, np.concatenate(targets))
    scorer.save(out)
    return {"out": str(out), "examples": len(texts), "with_seed_set": with_seed, **config.__dict__}


def evaluate(data: Sequence[Path], scorer: EmotionScorer) -> dict:
    """Agreement of `scorer` with the reference `scores` of the data files."""
    texts, vectors = [], []
    for path in data:
        file_texts, file_vectors = read_scored(path)
        texts += file_texts
        vectors.append(file_vectors)
    return {"records": len(texts), **agreement(scorer.score(texts), np.concatenate(vectors))}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m crowd scorer", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="action", required=True)
    t = sub.add_parser("train", help="train an offline head on scored JSONL (plus the seed set)")
    t.add_argument(
        "--data", type=Path, action="append", required=True, help="JSONL with text + scores"
    )
    t.add_argument("--out", type=Path, required=True, help="where to write the head (.npz)")
    t.add_argument("--no-seed", action="store_true", help="leave the bundled seed set out")
    t.add_argument(
        "--hidden", type=int, default=DEFAULT_HEAD.hidden, help="hidden width; 0 = linear"
    )
    t.add_argument("--l2", type=float, default=DEFAULT_HEAD.l2, help="weight penalty")
    t.add_argument(
        "--temperature",
        type=_temperature,
        default=DEFAULT_HEAD.temperature,
        help="softmax temperature of the outputs, or 'none' for independent sigmoids",
    )
    e = sub.add_parser("eval", help="top-1 agreement and mean L2 against reference scores")
    e.add_argument(
        "--data", type=Path, action="append", required=True, help="JSONL with text + scores"
    )
    e.add_argument("--scorer", default="default", help="'default', 'hub:<id>' or a saved head")
    return parser


def _temperature(raw: str) -> float | None:
    if raw.strip().lower() == "none":
        return None
    value = float(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError("the temperature must be positive (or 'none')")
    return value


def main(argv: list[str]) -> int:
    """argv[0] is 'scorer'. Exit 0 on success, 2 on bad input (nothing written)."""
    args = _parser().parse_args(argv[1:])
    try:
        if args.action == "train":
            if args.hidden < 0 or args.l2 < 0:
                raise ValueError("--hidden and --l2 must not be negative")
            config = HeadConfig(hidden=args.hidden, l2=args.l2, temperature=args.temperature)
            result = train(args.data, args.out, not args.no_seed, config)
        else:
            result = evaluate(args.data, load_scorer(args.scorer))
    except (OSError, ValueError) as exc:
        print(f"scorer {args.action}: {exc}", file=sys.stderr)
        return 2
    if args.action == "eval":
        print(
            f"records {result['records']}  top-1 agreement {result['top1']:.3f}  "
            f"mean L2 {result['mean_l2']:.3f}"
        )
    print(json.dumps(result))
    return 0
