"""A merged candidate: the group candidates' LoRA adapters combined by PEFT's own
`add_weighted_adapter` (TIES, DARE, SVD and linear combinations), never by hand.

Every source is loaded onto the trainer's private base copy, PEFT combines them into one more
adapter, which is saved like a trained one (atomically, `save_adapter`), and the base is
unwrapped again: its weights never change.

The weights. PEFT's combination types do not all mean the same thing by a weight: `svd` and
`dare_linear_svd` sum the adapters' full weight deltas, `ties_svd` and `dare_ties_svd` average
the deltas that agree in sign; `linear`, `ties` and `dare_ties` combine the A and B factors
separately, each with the square root of the weight (so a sum of n factors multiplies the
product by n^2), the TIES ones again averaging where signs agree. `equal_weights` gives each
type the weights under which merging n copies of one adapter returns that adapter
(tests/test_merge.py checks it), so the merge is a mean, not a sum, whatever the type.

TIES and DARE prune each source to `DENSITY` of its entries (largest magnitude for TIES, at
random and rescaled for DARE; the seed makes DARE repeatable). The `_svd` types apply them to the
full delta B @ A of each layer, relative to the base model that every candidate shares, and
factor the result back to the sources' rank: TIES' own setting (task vectors over one base).
The others apply them to A and B separately.

Adapters of different ranks or target modules are not merged (`MergeRefused` says which):
PEFT's factor-wise types cannot, and a merged candidate must keep the shape later rounds train.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crowd.training.base import TRAINED, check_adapter_dir, save_adapter
from crowd.training.data import TrainingFailed

DENSITY = 0.5
"""Share of each source's entries that TIES and DARE keep (PEFT's examples use 0.2-0.7)."""

SUM_OF_FACTORS = ("linear", "dare_linear", "magnitude_prune")
MEAN_OF_FACTORS = ("ties", "dare_ties")
SUM_OF_DELTAS = ("svd", "dare_linear_svd", "magnitude_prune_svd")
MEAN_OF_DELTAS = ("ties_svd", "dare_ties_svd")
PRUNING = (
    *("ties", "dare_ties", "dare_linear", "magnitude_prune"),
    *("ties_svd", "dare_ties_svd", "dare_linear_svd", "magnitude_prune_svd"),
)


class MergeRefused(TrainingFailed):
    """The sources cannot be merged; the message says why, in the organizer's words (a round
    job fails the merged candidate with it and goes on with the others)."""


def equal_weights(method: str, n: int) -> list[float]:
    """Weights that make `method`'s merge of `n` adapters their mean (see the module doc)."""
    if method in SUM_OF_FACTORS:
        return [1.0 / n**2] * n
    if method in SUM_OF_DELTAS:
        return [1.0 / n] * n
    if method in MEAN_OF_FACTORS or method in MEAN_OF_DELTAS:
        return [1.0] * n
    raise MergeRefused(f"unknown merge method {method!r}")


def lora_shape(adapter_dir: Path) -> tuple[int, tuple[str, ...]]:
    """(rank, sorted target modules) of a saved adapter, from its config."""
    check_adapter_dir(adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    targets = config.get("target_modules") or ()
    if isinstance(targets, str):  # PEFT also stores a regular expression
        targets = (targets,)
    return int(config["r"]), tuple(sorted(targets))


def check_mergeable(sources: Sequence[Path], names: Sequence[str]) -> None:
    """MergeRefused unless there are at least two sources of one rank and one set of targets;
    `names` say which candidate each source is, for the message."""
    if len(sources) < 2:
        raise MergeRefused(
            f"a merge needs at least two group candidates; this round has {len(sources)}"
        )
    shapes = [lora_shape(Path(s)) for s in sources]
    ranks = {name: r for name, (r, _) in zip(names, shapes)}
    if len(set(ranks.values())) > 1:
        listed = ", ".join(f"{n} r={r}" for n, r in ranks.items())
        raise MergeRefused(f"cannot merge adapters of different LoRA ranks ({listed})")
    targets = {name: t for name, (_, t) in zip(names, shapes)}
    if len(set(targets.values())) > 1:
        listed = "; ".join(f"{n}: {', '.join(t)}" for n, t in targets.items())
        raise MergeRefused(f"cannot merge adapters that adapt different modules ({listed})")


def merge_adapters(
    base: Any,
    sources: Sequence[Path],
    out_dir: Path,
    method: str,
    names: Sequence[str] | None = None,
    density: float = DENSITY,
    seed: int = 0,
) -> Path:
    """Merge the adapters in `sources` onto `base` (a transformers model, left as it was) by
    PEFT's `method` with `equal_weights`, and save the result to `out_dir` like a trained
    adapter. MergeRefused for sources that cannot be merged, FileExistsError if `out_dir`
    exists."""
    import torch
    from peft import PeftModel

    names = list(names or [Path(s).name for s in sources])
    check_mergeable(sources, names)
    weights = equal_weights(method, len(sources))
    if out_dir.exists():
        raise FileExistsError(f"the output folder {out_dir} already exists")
    labels = [f"source{i}" for i in range(len(sources))]
    model = PeftModel.from_pretrained(base, str(sources[0]), adapter_name=labels[0])
    try:
        for label, source in zip(labels[1:], sources[1:]):
            model.load_adapter(str(source), adapter_name=label)
        torch.manual_seed(seed)  # DARE drops entries at random
        model.add_weighted_adapter(
            labels,
            weights,
            TRAINED,
            combination_type=method,
            density=density if method in PRUNING else None,
        )
        return save_adapter(model, out_dir)
    finally:
        model.unload()
        shutil.rmtree(out_dir.with_name(f".{out_dir.name}.partial"), ignore_errors=True)
