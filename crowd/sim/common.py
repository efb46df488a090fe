"""What the simulation studies (convergence, poisoning) share: the run's emotion scorer and the
CPU threads torch may use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

TRAINED_SCORER = "scorer.npz"  # in the run folder: the head trained on --data's scores


def scorer_spec(scorer: str | None, data: Path, out: Path, settings) -> str:
    """`scorer` if given; else a head trained on `data`'s reference `scores` (OUT/scorer.npz),
    which ranks candidates as the paper's scorer does (docs/results/convergence.md); else, for
    a file without scores, the app's scorer."""
    from crowd.scoring.cli import read_scored

    if scorer:
        return scorer
    try:
        read_scored(data)
    except ValueError:
        return settings.scorer
    return str(out / TRAINED_SCORER)


def train_scorer(data: Path, path: Path, show: Callable[[str, bool], None]) -> None:
    """The default head (crowd.scoring.DEFAULT_HEAD) fitted on the file's texts and reference
    vectors plus the seed set: `python -m crowd scorer train --data FILE --out PATH`."""
    from crowd.scoring.cli import train
    from crowd.scoring.scorers import DEFAULT_HEAD

    show(f"training the emotion scorer on the reference scores of {data} ...", True)
    partial = path.with_name(path.stem + ".partial.npz")
    train([data], partial, True, DEFAULT_HEAD)
    partial.replace(path)  # a killed run leaves no half-written head behind


def set_threads(threads: int | None) -> None:
    """Torch's CPU threads (None or 0: torch's own default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
