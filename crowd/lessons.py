"""What a correction teaches: the one definition that a round's training data, its held-out set
and every export file are built from.

What is stored is what was shown. A stored correction (a row of `corrections`) keeps the texts
the volunteer saw when acting: `original`, the reply as the model wrote it; `shown`, that reply as
their page displayed it (their own live rewrite of it, if they had rewritten it: a rewrite
stands for the reply from then on, in the page, in the next turn's context and in every later
correction); `other_reply`, reply B of an A/B pick as displayed; `prompt`, the conversation
displayed before the reply (earlier rewritten replies as rewritten). The service
(crowd/service.py) fills them from `storage.queries.SHOWN`, and refuses an action whose page
shows another text than the one stored now (rewritten or restored elsewhere since), and an A/B
pick for a pair the page does not show (reply B is always the newest second reply to A). By kind:

| kind     | the text it is about     | SFT target                 | pair (chosen, rejected)            | KTO labels (completion, desirable)   |
|----------|--------------------------|----------------------------|------------------------------------|--------------------------------------|
| rewrite  | the model's `original`   | the rewrite                | (rewrite, original) if they differ | rewrite +, original - if they differ |
| choice   | A = `shown`, B = `other_reply` | the picked reply (A or B); tie, both bad: nothing | (picked, other) | picked +, other -; both bad: both - |
| rating   | `shown`                  | thumbs up: that text       |                                    | that text, + or -                    |
| emotion  | `shown`                  | that text, if the label is the campaign's target emotion (emotion task) | |               |

A rewrite always pairs against the model's text, never against an earlier rewrite of the
volunteer's own (which the new one replaces). An emotion label is also a (text, label) example
for the emotion scorer. An unchanged rewrite endorses the reply (an SFT target) but prefers
nothing, so it makes no pair. A correction made before a rewrite keeps the text it was made on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from storage.rows import Correction
from storage.vocabulary import CHAT_ROLES, RATINGS

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


def lesson(correction: Correction, task: str, target_emotion: str | None) -> Lesson:
    """What `correction` teaches in a campaign of `task` (and `target_emotion`)."""
    prompt = parse_prompt(correction["prompt"], correction.get("id"))
    kind = correction["kind"]
    if kind == "rewrite":
        return _rewrite(prompt, correction["rewrite"], correction["original"])
    shown = about(correction)
    if kind == "choice":
        return _choice(prompt, correction["choice"], shown, correction.get("other_reply"))
    if kind == "rating" and correction["rating"] in RATINGS:
        liked = correction["rating"] == 1
        return Lesson(prompt, sft_target=shown if liked else None, kto=((shown, liked),))
    if kind == "emotion" and correction["emotion"]:
        on_target = task == "emotion" and correction["emotion"] == target_emotion
        return Lesson(
            prompt,
            sft_target=shown if on_target else None,
            emotion=(shown, correction["emotion"]),
        )
    return Lesson(prompt)


def about(correction: Correction) -> str:
    """The reply text a correction is about (the table above): the model's text for a rewrite,
    the text shown for every other kind (`original` where a row predates `shown`)."""
    if correction["kind"] == "rewrite":
        return correction["original"]
    return correction.get("shown") or correction["original"]


def _rewrite(prompt: list[Message], rewrite: str | None, original: str) -> Lesson:
    if not rewrite or not rewrite.strip():
        return Lesson(prompt)
    if rewrite == original:
        return Lesson(prompt, sft_target=rewrite, kto=((rewrite, True),))
    return Lesson(prompt, rewrite, (rewrite, original), ((rewrite, True), (original, False)))


def _choice(prompt: list[Message], choice: str | None, a: str, b: str | None) -> Lesson:
    if b is None:
        return Lesson(prompt)
    if choice == "both_bad":
        return Lesson(prompt, kto=((a, False), (b, False)))
    if choice not in ("a", "b"):
        return Lesson(prompt)  # a tie prefers nothing
    chosen, rejected = (a, b) if choice == "a" else (b, a)
    if chosen == rejected:
        return Lesson(prompt, sft_target=chosen, kto=((chosen, True),))
    return Lesson(prompt, chosen, (chosen, rejected), ((chosen, True), (rejected, False)))
