"""The crowds that `simulate grouping` runs on: user vectors read from a CSV (or first written
from JSONL records' `scores`), and one run's draw of a crowd, an expert and a starting model."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class World:
    """One run's draw: the crowd (n, d), the expert (d,), the model's starting point (d,)."""

    users: np.ndarray
    expert: np.ndarray
    start: np.ndarray


def load_users(path: Path) -> np.ndarray:
    """User vectors from a CSV: first column an id, the others numeric; a header row is
    recognised by a non-numeric second field."""
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if rows and not _is_number(rows[0][1] if len(rows[0]) > 1 else ""):
        rows = rows[1:]
    if not rows or len(rows[0]) < 2:
        raise ValueError(f"{path}: need rows of an id and at least one numeric column")
    values = []
    for line, row in enumerate(rows, start=2):
        if len(row) != len(rows[0]) or not all(_is_number(v) for v in row[1:]):
            raise ValueError(
                f"{path}: row {line} is not an id followed by {len(rows[0]) - 1} numbers"
            )
        values.append([float(v) for v in row[1:]])
    return np.array(values)


def _is_number(text: str) -> bool:
    try:
        return np.isfinite(float(text))
    except ValueError:
        return False


def users_from_jsonl(sources: list[Path], out: Path) -> int:
    """Write a users CSV from JSONL records carrying a `scores` mapping (e.g. the GoEmotions
    scorer's 28 probabilities); returns the number of users written."""
    records = [json.loads(line) for src in sources for line in open(src) if line.strip()]
    keys = list(records[0]["scores"])
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", *keys])
        for i, record in enumerate(records):
            writer.writerow([f"u{i}", *(record["scores"][k] for k in keys)])
    return len(records)


def draw_world(
    users: np.ndarray, n_users: int, expert_size: int, rng: np.random.Generator
) -> World:
    if n_users + expert_size > len(users):
        raise ValueError(
            f"{n_users} users and an expert of {expert_size} need "
            f"{n_users + expert_size} rows; the file has {len(users)}"
        )
    rows = users[rng.choice(len(users), n_users + expert_size, replace=False)]
    crowd, experts = rows[expert_size:], rows[:expert_size]
    start = rng.uniform(crowd.min(axis=0), crowd.max(axis=0))
    return World(crowd, experts.mean(axis=0), start)
