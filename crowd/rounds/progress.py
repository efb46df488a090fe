"""The round job's progress record, OUT/progress.json: what the job writes as it goes (`Reporter`)
and how a progress line reads a step of it (`step_text`). The worker relays the record into the
job's row; the organizer's jobs table, the volunteers' round news (crowd.views), the demo's bar
and the convergence study's line read it there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crowd.rounds.results import PROGRESS, write_json

STEP_FIELDS = ("group", "step", "steps", "loss", "eta_s")  # of the stage's latest step


def step_text(progress: dict[str, Any]) -> str:
    """The stage's latest step as a progress line says it, "step 12/30 loss 3.284" (empty
    before the stage's first step): the demo's bar and the convergence study's line."""
    if not progress.get("steps"):
        return ""
    text = f"step {progress['step']}/{progress['steps']}"
    if progress.get("loss") is not None:
        text += f" loss {progress['loss']:.3f}"
    return text


REPORT_EVERY_S = 0.5  # progress.json is rewritten at most this often (and at every stage)


class Reporter:
    """Writes the job's progress to OUT/progress.json (throttled) and asks `keep_going`
    whether to go on; merges each update into the last."""

    def __init__(self, out: Path, keep_going: Callable[[], bool] = lambda: True):
        self.path, self.keep_going = out / PROGRESS, keep_going
        self.state: dict = {}
        self.last = 0.0

    def __call__(self, update: dict, force: bool = False) -> bool:
        kept = self.state
        if "stage" in update:  # a new stage: the last one's step, loss and estimate are not its
            kept = {k: v for k, v in kept.items() if k not in STEP_FIELDS}
        self.state = {**kept, **update}
        if force or time.monotonic() - self.last >= REPORT_EVERY_S:
            self.last = time.monotonic()
            write_json(self.path, self.state)
        return self.keep_going()
