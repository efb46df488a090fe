"""How one campaign setting is declared: what kind of value it takes, its range or choices,
whether it may be unset, its label and help, and the part of the form it belongs to.

`crowd.campaigns.CampaignSpec` declares every setting an organizer edits with the helpers here
(`number`, `share`, `choice`, `flag`, `text`, `lines`), as `crowd.config.setting` declares the
environment's, and as TRL keeps a field's choices beside its help. From those declarations come
validation (`Declared.clean`), the organizer form's widgets and parsing (`crowd.ui.campaign_form`)
and the test that compares them with the schema's CHECK constraints
(tests/test_campaign_spec.py). Adding a setting is one field in the spec plus a migration.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crowd.limits import Refused, clean_text

KINDS = ("int", "real", "flag", "choice", "text", "lines")
"""int and real: a number in [low, high]; flag: True or False; choice: one of `choices`; text:
one line of at most `max_chars`; lines: a list of at most `max_lines` lines of `max_chars`."""

PARTS = ("contributors", "campaign", "rounds", "trust", "candidates")
"""The parts of the organizer form, in the order it shows them (who may contribute first)."""


@dataclass(frozen=True)
class Declared:
    """One campaign setting's declaration, kept in its dataclass field's metadata."""

    kind: str
    label: str
    help: str
    part: str
    low: float = 0
    high: float = 0
    step: float | None = None  # a real with a step is shown as a slider
    choices: tuple[str, ...] = ()
    optional: bool = False  # None (an empty box on the form) is allowed
    max_chars: int = 0
    max_lines: int = 0
    parse: Callable[[str], str] | None = None  # text: the stored form, or ValueError saying why

    def __post_init__(self) -> None:
        assert self.kind in KINDS and self.part in PARTS, (self.kind, self.part)

    @property
    def allowed(self) -> str:
        """What the setting accepts, in words (the tail of a refusal)."""
        if self.kind == "int":
            return f"a whole number from {self.low:g} to {self.high:g}"
        if self.kind == "real":
            return f"a number from {self.low:g} to {self.high:g}"
        if self.kind == "flag":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "lines":
            return f"1 to {self.max_lines} lines of at most {self.max_chars} characters"
        return f"text of at most {self.max_chars} characters"

    def clean(self, name: str, value: object) -> Any:
        """`value` as stored, or Refused naming the setting and what it accepts."""
        if value is None and self.optional:
            return None
        try:
            return self._clean(name, value)
        except Refused as exc:  # clean_text's reason, which names the setting
            raise Refused(f"{exc} Nothing was saved.") from None
        except ValueError as exc:
            reason = str(exc) or self.allowed
            shown = repr(value)[:40]
            raise Refused(
                f"The campaign setting {name}: {shown} is not allowed: {reason}. Nothing was saved."
            ) from None

    def _clean(self, name: str, value: object) -> Any:
        if self.kind in ("int", "real"):
            return self._number(value)
        if self.kind == "flag":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError
            return value
        if self.kind == "lines":
            if not isinstance(value, list) or not 1 <= len(value) <= self.max_lines:
                raise ValueError
            return [clean_text(line, f"{name} line", self.max_chars) for line in value]
        if self.parse is not None:
            if not isinstance(value, str):
                raise ValueError("must be text")
            if len(value) > self.max_chars:
                raise ValueError(f"longer than {self.max_chars:,} characters")
            return self.parse(value)
        return clean_text(value, name, self.max_chars)

    def _number(self, value: object) -> int | float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError  # a flag is an int to Python, not a number to an organizer
        if isinstance(value, float) and self.kind == "int":
            raise ValueError
        if not (math.isfinite(value) and self.low <= value <= self.high):
            raise ValueError
        return value


def declared(f: Any) -> Declared:
    """The declaration of a CampaignSpec field (`dataclasses.fields(CampaignSpec)`)."""
    return f.metadata["campaign"]


def _field(default: Any, declaration: Declared) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"campaign": declaration})
    return field(default=default, metadata={"campaign": declaration})


def number(
    default: int | None,
    low: int,
    high: int,
    label: str,
    help: str,
    part: str,
    *,
    optional: bool = False,
) -> Any:
    """A whole number from `low` to `high` (None allowed when `optional`)."""
    return _field(default, Declared("int", label, help, part, low, high, optional=optional))


def share(
    default: float, low: float, high: float, label: str, help: str, part: str, step: float = 0.0
) -> Any:
    """A number from `low` to `high`; with a `step`, the form shows a slider."""
    return _field(default, Declared("real", label, help, part, low, high, step=step or None))


def choice(
    default: str | None,
    choices: tuple[str, ...],
    label: str,
    help: str,
    part: str,
    *,
    optional: bool = False,
) -> Any:
    """One of `choices` (None allowed when `optional`)."""
    return _field(
        default, Declared("choice", label, help, part, choices=choices, optional=optional)
    )


def flag(default: bool, label: str, help: str, part: str) -> Any:
    """True or False (stored as 1 or 0)."""
    return _field(default, Declared("flag", label, help, part))


def text(
    default: str | None,
    max_chars: int,
    label: str,
    help: str,
    part: str,
    *,
    optional: bool = False,
    parse: Callable[[str], str] | None = None,
    max_lines: int = 1,
) -> Any:
    """Text of at most `max_chars` characters, cleaned by `crowd.limits.clean_text` or by
    `parse` (which raises ValueError saying why not); `max_lines` > 1 shows a text area."""
    declaration = Declared(
        "text",
        label,
        help,
        part,
        optional=optional,
        max_chars=max_chars,
        max_lines=max_lines,
        parse=parse,
    )
    return _field(default, declaration)


def lines(
    default: list[str], max_lines: int, max_chars: int, label: str, help: str, part: str
) -> Any:
    """A list of 1 to `max_lines` texts of at most `max_chars` each (one per line on the form)."""
    declaration = Declared("lines", label, help, part, max_chars=max_chars, max_lines=max_lines)
    return _field(default, declaration)
