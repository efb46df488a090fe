"""The convergence study's input and its pure parts: reading the emotion neighbourhoods,
checking the protocol fits the pool, and dealing a pool into the groups' segments.

The input is JSONL in the format of the shared `goemotions_neighborhoods.jsonl`: one record per
line with `target` (the emotion), `role` ('target' for the comment scoring highest on it,
'neighbor' for one of its nearest comments) and `text`; other fields (`scores`) are ignored.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from crowd.emotions import GOEMOTIONS_LABELS

ROLES = ("target", "neighbor")


class StudyInputError(ValueError):
    """The data file, the emotions asked for or the protocol's sizes are unusable; the message
    says which and why."""


@dataclass
class Neighbourhood:
    """One emotion's target comment and its pool of neighbours (in file order)."""

    emotion: str
    targets: list[str] = field(default_factory=list)  # exactly one in a usable file
    neighbours: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return self.targets[0]


def read_neighbourhoods(path: Path) -> dict[str, Neighbourhood]:
    """Every emotion's neighbourhood in the file; StudyInputError naming the first bad line."""
    if not path.is_file():
        raise StudyInputError(f"{path}: no such file")
    found: dict[str, Neighbourhood] = {}
    with open(path, encoding="utf-8") as lines:
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            emotion, role, text = _record(line, f"{path}:{lineno}")
            hood = found.setdefault(emotion, Neighbourhood(emotion))
            (hood.targets if role == "target" else hood.neighbours).append(text)
    if not found:
        raise StudyInputError(f"{path}: no records")
    return found


def _record(line: str, where: str) -> tuple[str, str, str]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise StudyInputError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise StudyInputError(f"{where}: a record must be a JSON object")
    emotion, role, text = record.get("target"), record.get("role"), record.get("text")
    if emotion not in GOEMOTIONS_LABELS:
        raise StudyInputError(
            f"{where}: 'target' must be one of the 28 GoEmotions labels, not {str(emotion)[:40]!r}"
        )
    if role not in ROLES:
        raise StudyInputError(
            f"{where}: 'role' must be 'target' or 'neighbor', not {str(role)[:40]!r}"
        )
    if not isinstance(text, str) or not text.strip():
        raise StudyInputError(f"{where}: 'text' must be a non-empty string")
    return emotion, role, text.strip()


def pick_emotions(
    hoods: dict[str, Neighbourhood], wanted: Sequence[str], path: Path
) -> list[Neighbourhood]:
    """The requested neighbourhoods, in the order asked ('all': every one in the file)."""
    names = sorted(hoods) if list(wanted) == ["all"] else list(dict.fromkeys(wanted))
    if not names:
        raise StudyInputError("--emotions is empty")
    for name in names:
        if name not in GOEMOTIONS_LABELS:
            raise StudyInputError(
                f"unknown emotion {name!r}; the GoEmotions labels are: "
                f"{', '.join(GOEMOTIONS_LABELS)}"
            )
        if name not in hoods:
            raise StudyInputError(
                f"{path} has no neighbourhood for {name!r}; it has: {', '.join(sorted(hoods))}"
            )
        if len(hoods[name].targets) != 1:
            raise StudyInputError(
                f"{path}: {name!r} needs exactly one 'target' record, "
                f"found {len(hoods[name].targets)}"
            )
    return [hoods[name] for name in names]


def check_protocol(hood: Neighbourhood, groups: int, segments: Sequence[int]) -> None:
    """Every generation must be able to deal `groups` segments from what is left of the pool
    after the earlier winners' segments left it (the paper: 100 >= 3 x 33, 67 >= 3 x 22, ...)."""
    left = len(hood.neighbours)
    for generation, size in enumerate(segments, 1):
        if groups * size > left:
            raise StudyInputError(
                f"{hood.emotion}: generation {generation} needs {groups} x {size} = "
                f"{groups * size} pool items but only {left} are left of "
                f"{len(hood.neighbours)} neighbours; use smaller --segments or fewer --groups"
            )
        left -= size


def deal(pool: Sequence[int], groups: int, size: int, rng: random.Random) -> dict[int, list[int]]:
    """Shuffle the pool (item indices) and deal `groups` disjoint segments of `size` items."""
    order = sorted(pool)
    rng.shuffle(order)
    return {group: sorted(order[group * size : (group + 1) * size]) for group in range(groups)}


def generation_rng(seed: int, emotion: str, generation: int) -> random.Random:
    """The shuffle of one generation: a pure function of the run's seed, so a resumed run deals
    the same segments again."""
    return random.Random(f"convergence/{seed}/{emotion}/{generation}")
