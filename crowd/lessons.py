"""What a correction teaches: the one definition that a round's training data, its held-out set
and every export file are built from.

A stored correction (a row of `corrections`, with `other_reply`: the text of reply B for an A/B
pick) teaches, by kind:

| kind     | SFT target                         | preference pair (chosen, rejected)  | KTO labels (completion, desirable)   |
|----------|------------------------------------|-------------------------------------|--------------------------------------|
| rewrite  | the rewrite                        | (rewrite, original) if they differ  | rewrite +, original - if they differ |
| choice   | the picked reply (A or B)          | (picked, other)                     | picked +, other -                    |
|          | tie: nothing; both bad: nothing    |                                     | both bad: both -                     |
| rating   | thumbs up: the reply               |                                     | the reply, + or -                    |
| emotion  | the reply, if the label is the campaign's target emotion (emotion task) | | |

An emotion label is also an (text, label) example for the emotion scorer. An unchanged rewrite
endorses the reply (an SFT target) but prefers nothing, so it makes no pair.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from storage.vocabulary import CHAT_ROLES

Message = dict[str, str]


class MalformedCorrection(ValueError):
    """A stored correction whose prompt is not a list of chat messages."""


@dataclass(frozen=True)
class Lesson:
    """What one correction teaches. `prompt` is the chat up to the corrected reply."""

    prompt: list[Message]
    sft_target: str | None = None
    pair: tuple[str, str] | None = None  # (chosen, rejected), never equal
    kto: tuple[tuple[str, bool], ...] = ()
    emotion: tuple[str, str] | None = None  # (text, label)

    def sft_messages(self) -> list[Message] | None:
        """The SFT example as chat messages (prompt + target reply), or None."""
        if self.sft_target is None:
            return None
        return [*self.prompt, {"role": "assistant", "content": self.sft_target}]


def parse_prompt(raw: str, correction_id: object = "?") -> list[Message]:
    """The stored JSON prompt as role/content messages, or MalformedCorrection."""
    try:
        prompt = [{"role": m["role"], "content": m["content"]} for m in json.loads(raw)]
    except (ValueError, TypeError, KeyError) as exc:
        raise MalformedCorrection(
            f"correction {correction_id} has a malformed prompt: {exc}"
        ) from None
    if any(m["role"] not in CHAT_ROLES or not isinstance(m["content"], str) for m in prompt):
        raise MalformedCorrection(
            f"correction {correction_id} has a prompt message that is not chat text"
        )
    return prompt


def lesson(correction: dict[str, Any], task: str, target_emotion: str | None) -> Lesson:
    """What `correction` teaches in a campaign of `task` (and `target_emotion`)."""
    prompt = parse_prompt(correction["prompt"], correction.get("id"))
    original, kind = correction["original"], correction["kind"]
    if kind == "rewrite":
        return _rewrite(prompt, correction["rewrite"], original)
    if kind == "choice":
        return _choice(prompt, correction["choice"], original, correction.get("other_reply"))
    if kind == "rating" and correction["rating"] in (-1, 1):
        liked = correction["rating"] == 1
        return Lesson(prompt, sft_target=original if liked else None, kto=((original, liked),))
    if kind == "emotion" and correction["emotion"]:
        on_target = task == "emotion" and correction["emotion"] == target_emotion
        return Lesson(
            prompt,
            sft_target=original if on_target else None,
            emotion=(original, correction["emotion"]),
        )
    return Lesson(prompt)


def _rewrite(prompt: list[Message], rewrite: str | None, original: str) -> Lesson:
    if not rewrite or not rewrite.strip():
        return Lesson(prompt)
    if rewrite == original:
        return Lesson(prompt, sft_target=rewrite, kto=((rewrite, True),))
    return Lesson(prompt, rewrite, (rewrite, original), ((rewrite, True), (original, False)))


def _choice(prompt: list[Message], choice: str, original: str, other: str | None) -> Lesson:
    if other is None:
        return Lesson(prompt)
    if choice == "both_bad":
        return Lesson(prompt, kto=((original, False), (other, False)))
    if choice not in ("a", "b"):
        return Lesson(prompt)  # a tie prefers nothing
    chosen, rejected = (original, other) if choice == "a" else (other, original)
    if chosen == rejected:
        return Lesson(prompt, sft_target=chosen, kto=((chosen, True),))
    return Lesson(prompt, chosen, (chosen, rejected), ((chosen, True), (rejected, False)))
