"""The copy that guides a volunteer: the first-visit how-to and the emotion labels' one-line
definitions. Both live in assets/ as JSON the project wrote; this module only reads them."""

from __future__ import annotations

import json
from functools import cache

from crowd.config import ASSETS
from crowd.emotions import GOEMOTIONS_LABELS

DEFINITIONS_FILE = ASSETS / "emotion_definitions.json"
HOWTO_FILE = ASSETS / "howto.json"


@cache
def emotion_definitions() -> dict[str, str]:
    """label -> its one-line definition, for every GoEmotions label, in the labels' order."""
    raw = json.loads(DEFINITIONS_FILE.read_text(encoding="utf-8"))
    missing = [label for label in GOEMOTIONS_LABELS if not raw.get(label)]
    if missing:
        raise ValueError(f"{DEFINITIONS_FILE.name} lacks a definition of {', '.join(missing)}")
    return {label: raw[label] for label in GOEMOTIONS_LABELS}


@cache
def _howto() -> dict:
    return json.loads(HOWTO_FILE.read_text(encoding="utf-8"))


def howto_steps(reviews_on: bool = False) -> list[str]:
    """The steps of taking part (Markdown): chat, correct, watch it learn; with peer review on,
    reviewing others' corrections comes before the last."""
    steps = list(_howto()["steps"])
    if reviews_on:
        steps.insert(len(steps) - 1, _howto()["review_step"])
    return steps


def good_rewrite(task: str, target: str | None) -> dict[str, str]:
    """One example of a good rewrite for the campaign's task: prompt, before, after. For the
    emotion task, one written for the target emotion when assets/ has it, else a generic one."""
    examples = _howto()["examples"]
    if task != "emotion":
        return dict(examples["preference"])
    target = target or "the target emotion"
    example = examples.get(target) or examples["emotion"]
    return {key: text.replace("{emotion}", target) for key, text in example.items()}
