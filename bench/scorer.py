"""How close is the offline emotion scorer to the paper's (SamLowe/roberta-base-go_emotions)?

Reference vectors are each record's `scores` in the shared GoEmotions files. Figures:
  (a) head trained on the seed set only, tested on both files;
  (b) trained on the neighbourhoods (+ seed), tested on the generated replies;
  (c) trained on the generated replies (+ seed), tested on the neighbourhoods;
and the one that decides rounds: do candidates rank the same? A candidate is one fine-tuned
sub-model's 50 samples (target emotion x generation x sub-model, 42 in the file). Its distance is
the mean L2 of its samples to the target: the centroid of that emotion's 100 neighbours, under the
reference scores and under ours (`target_vector`); we report Spearman over all 42 candidates
and the mean within-emotion Spearman (3 candidates per emotion), also with a one-hot target.

  .venv/bin/python bench/scorer.py [--data-dir ../shared/data/goemotions] [--cache DIR]

Embedding ~4,500 texts takes minutes on 2 cores; --cache keeps them between runs. Prints a table
per variant, and as its last line one JSON object with the key figures of the default head.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from crowd.scoring import head as scoring_head  # noqa: E402
from crowd.scoring.cli import agreement, read_scored  # noqa: E402
from crowd.scoring.head import HeadConfig  # noqa: E402
from crowd.scoring.scorers import (  # noqa: E402
    DEFAULT_HEAD,
    EmbeddingHeadScorer,
    mean_l2,
    read_seed,
    target_vector,
)

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {  # name: head config; "default" is what the app ships (linear, l2=1e-4, softmax T=0.5)
    "default": DEFAULT_HEAD,
    "sigmoid out": HeadConfig(l2=1e-4, temperature=None),
    "softmax T=0.35": HeadConfig(l2=1e-4, temperature=0.35),
    "softmax T=0.7": HeadConfig(l2=1e-4, temperature=0.7),
    "softmax T=1": HeadConfig(l2=1e-4, temperature=1.0),
    "l2=1e-3 sigmoid": HeadConfig(l2=1e-3, temperature=None),
    "l2=1e-3 T=0.5": HeadConfig(l2=1e-3, temperature=0.5),
    "l2=1e-2 sigmoid": HeadConfig(l2=1e-2, temperature=None),
    "mlp256 sigmoid": HeadConfig(hidden=256, l2=1e-4, temperature=None),
    "mlp256 T=0.5": HeadConfig(hidden=256, l2=1e-4, temperature=0.5),
}


class Split:
    """Texts, reference vectors, embeddings and raw records of one data file."""

    def __init__(self, path: Path, cache: Path | None) -> None:
        self.records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        self.texts, self.ref = read_scored(path)
        self.emb = cached_embed(self.texts, cache / f"{path.stem}.npy" if cache else None)


def cached_embed(texts: list[str], path: Path | None) -> np.ndarray:
    if path is not None and path.exists():
        emb = np.load(path)
        if len(emb) == len(texts):
            return emb
    emb = scoring_head.embed(texts)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, emb)
    return emb


class Embedded(EmbeddingHeadScorer):
    """The same scorer, fed from precomputed embeddings: the bench embeds each text once."""

    def __init__(self, config: HeadConfig, lookup: dict[str, np.ndarray]) -> None:
        super().__init__(config)
        self._lookup = lookup

    def score(self, texts):
        return self.score_embeddings(np.stack([self._lookup[t] for t in texts]))


def candidate_distances(gen: Split, nb: Split, ours: np.ndarray, scorer: Embedded, mode: str):
    """Per candidate: (emotion, reference mean distance, our mean distance), sorted by candidate.
    mode 'centroid': targets are the neighbours' centroids; 'onehot': ours is one_hot(emotion)."""
    groups = collections.defaultdict(list)
    for i, r in enumerate(gen.records):
        groups[(r["target"], r["generation"], r["sub_model"])].append(i)
    rows = []
    for (emotion, *_), idx in sorted(groups.items()):
        neigh = [
            i
            for i, r in enumerate(nb.records)
            if r["target"] == emotion and r["role"] == "neighbor"
        ]
        ref_target = nb.ref[neigh].mean(0)
        our_target = target_vector(
            scorer, [nb.texts[i] for i in neigh] if mode == "centroid" else [], emotion
        )
        rows.append((emotion, mean_l2(gen.ref[idx], ref_target), mean_l2(ours[idx], our_target)))
    return (
        np.array([r[0] for r in rows]),
        np.array([r[1] for r in rows]),
        np.array([r[2] for r in rows]),
    )


def rank_agreement(
    emotions: np.ndarray, ref_d: np.ndarray, our_d: np.ndarray
) -> tuple[float, float]:
    """Spearman over all candidates, and its mean within each emotion."""
    within = [spearmanr(ref_d[emotions == e], our_d[emotions == e])[0] for e in np.unique(emotions)]
    return float(spearmanr(ref_d, our_d)[0]), float(np.nanmean(within))


def bootstrap(emotions, ref_d, our_d, reps: int = 1000, rng=None) -> tuple[float, float]:
    """5th and 95th percentiles of the all-candidate Spearman, resampling whole emotions (their
    candidates share a target, so they are not independent)."""
    rng = rng or np.random.default_rng(0)
    names = np.unique(emotions)
    values = []
    for _ in range(reps):
        idx = np.concatenate([np.flatnonzero(emotions == e) for e in rng.choice(names, len(names))])
        values.append(spearmanr(ref_d[idx], our_d[idx])[0])
    low, high = np.nanpercentile(values, [5, 95])
    return float(low), float(high)


def candidate_ranks(gen: Split, nb: Split, ours: np.ndarray, scorer: Embedded) -> dict[str, float]:
    out = {}
    for mode in ("centroid", "onehot"):
        dists = candidate_distances(gen, nb, ours, scorer, mode)
        out[f"rank_{mode}"], out[f"rank_{mode}_within"] = rank_agreement(*dists)
        if mode == "centroid":
            out["rank_centroid_p5"], out["rank_centroid_p95"] = bootstrap(*dists)
    return out


def run_variant(config, train_x, train_y, tests, gen, nb, lookup) -> dict[str, float]:
    scorer = Embedded(config, lookup)
    scorer.fit_embeddings(train_x, train_y)
    row = {}
    for name, split in tests.items():
        for key, value in agreement(scorer.score_embeddings(split.emb), split.ref).items():
            row[f"{name}_{key}"] = value
    if "gen" in tests:
        row.update(candidate_ranks(gen, nb, scorer.score_embeddings(gen.emb), scorer))
    return row


def show(title: str, rows: dict[str, dict[str, float]]) -> None:
    print(f"\n## {title}")
    keys = list(next(iter(rows.values())))
    widths = [max(len(k), 6) + 2 for k in keys]
    print(f"{'variant':<18}" + "".join(f"{k:>{w}}" for k, w in zip(keys, widths, strict=True)))
    for name, row in rows.items():
        print(
            f"{name:<18}" + "".join(f"{row[k]:>{w}.3f}" for k, w in zip(keys, widths, strict=True))
        )


def speed(texts: list[str], reps: int = 5) -> dict[str, float]:
    """Scoring 50 replies with the default scorer, and our embedding (plain transformers) against
    sentence-transformers on the same model, interleaved so both see the same machine load."""
    from sentence_transformers import SentenceTransformer

    scorer = EmbeddingHeadScorer.from_seed()
    tokenizer, _ = scoring_head.embedding_model()
    st = SentenceTransformer(tokenizer.name_or_path, device="cpu")
    ours, theirs, full = [], [], []
    for _ in range(reps):
        t = time.perf_counter()
        scoring_head.embed(texts)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        st.encode(texts, batch_size=scoring_head.BATCH, normalize_embeddings=True)
        theirs.append(time.perf_counter() - t)
        t = time.perf_counter()
        scorer.score(texts)
        full.append(time.perf_counter() - t)
    return {
        "score_50_s": float(np.median(full)),
        "st_over_transformers": float(np.median(theirs) / np.median(ours)),
    }


def baselines(splits: dict[str, Split]) -> None:
    """What a scorer that ignores the text would get: each file's own mean reference vector."""
    for name, split in splits.items():
        constant = np.tile(split.ref.mean(0), (len(split.ref), 1))
        result = agreement(constant, split.ref)
        print(
            f"baseline, constant mean vector on {name}: top1 {result['top1']:.3f}, "
            f"mean L2 {result['mean_l2']:.3f}"
        )


def key_figures(a: dict, b: dict, c: dict, n_nb: int, n_gen: int) -> dict[str, float]:
    """The last line: (a) seed-only figures pooled over both files, (b)+(c) cross figures pooled."""

    def pooled(x_nb: float, x_gen: float) -> float:
        return round((x_nb * n_nb + x_gen * n_gen) / (n_nb + n_gen), 3)

    return {
        "seed_top1": pooled(a["nb_top1"], a["gen_top1"]),
        "cross_top1": pooled(c["nb_top1"], b["gen_top1"]),
        "seed_l2": pooled(a["nb_mean_l2"], a["gen_mean_l2"]),
        "cross_l2": pooled(c["nb_mean_l2"], b["gen_mean_l2"]),
        "rank_spearman_seed": round(a["rank_centroid"], 3),
        "rank_spearman_trained": round(b["rank_centroid"], 3),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = REPO.parent / "shared" / "data" / "goemotions"
    parser.add_argument("--data-dir", type=Path, default=default_data)
    parser.add_argument("--cache", type=Path, default=None, help="keep embeddings here")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    nb = Split(args.data_dir / "goemotions_neighborhoods.jsonl", args.cache)
    gen = Split(args.data_dir / "goemotions_generated.jsonl", args.cache)
    seed_texts, seed_y = read_seed()
    seed_x = cached_embed(seed_texts, args.cache / "seed.npy" if args.cache else None)
    texts = nb.texts + gen.texts + seed_texts
    lookup = dict(zip(texts, np.concatenate([nb.emb, gen.emb, seed_x]), strict=True))
    print(f"embedded {len(lookup)} texts in {time.perf_counter() - t0:.0f} s (shared machine)")
    baselines({"nb": nb, "gen": gen})

    settings = {
        "(a) seed only -> both": (seed_x, seed_y, {"nb": nb, "gen": gen}),
        "(b) neighbourhoods + seed -> generated": (
            np.vstack([nb.emb, seed_x]), np.vstack([nb.ref, seed_y]), {"gen": gen}),
        "(b') neighbourhoods only -> generated": (nb.emb, nb.ref, {"gen": gen}),
        "(c) generated + seed -> neighbourhoods": (
            np.vstack([gen.emb, seed_x]), np.vstack([gen.ref, seed_y]), {"nb": nb}),
    }  # fmt: skip
    defaults = []
    for title, (x, y, tests) in settings.items():
        rows = {
            name: run_variant(cfg, x, y, tests, gen, nb, lookup) for name, cfg in VARIANTS.items()
        }
        show(title, rows)
        defaults.append(rows["default"])
    timing = speed(gen.texts[:50])
    print(
        f"\nscore(50 replies): {timing['score_50_s']:.2f} s median (shared 2-core machine); "
        f"sentence-transformers / plain transformers embedding time: "
        f"{timing['st_over_transformers']:.2f}"
    )
    print(
        json.dumps(
            key_figures(defaults[0], defaults[1], defaults[3], len(nb.texts), len(gen.texts))
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
