"""What the simulation studies (convergence, poisoning) share: the run's emotion scorer, the
CPU threads torch may use, and the check that a run folder holds one configuration."""

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


def check_resume(
    out: Path, config, study: str, judging_only: frozenset | set = frozenset()
) -> None:
    """A run folder holds one configuration (a dataclass, stored as OUT/run.json); refuse to mix
    another into it. Settings in `judging_only` may change between invocations; a setting added
    after a run was started reads as its default there."""
    import json
    from dataclasses import MISSING, asdict, fields

    from crowd.sim.convergence_data import StudyInputError

    path = out / "run.json"
    if not path.exists():
        return
    try:
        stored = json.loads(path.read_text())
    except ValueError:
        stored = None
    if not isinstance(stored, dict):
        raise StudyInputError(f"{path} is not a {study} run's settings file")
    wanted = json.loads(json.dumps(asdict(config)))
    defaults = {f.name: f.default for f in fields(config) if f.default is not MISSING}
    changed = sorted(
        k for k in wanted if k not in judging_only and stored.get(k, defaults.get(k)) != wanted[k]
    )
    if changed:
        raise StudyInputError(
            f"{out} holds a run with other settings ({', '.join(changed)}); "
            "use a new --out or the same settings"
        )
