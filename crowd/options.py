"""Command-line options built from the settings' declarations (crowd.config.setting), as TRL
builds its command line from its config dataclasses: a tool that takes one of the app's
settings on its command line (the studies' --epochs, --learning-rate, --samples, ...) takes the
option's type, range and help from the setting's one declaration. Only the default may differ
(a study follows the paper's recipe, not the app's), and a tool may say more in its own help.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, fields
from typing import Any

KIND = {"int": int, "float": float}  # a field's annotation -> the option's type (else str)
_SAME = object()  # the declared default


class OptionError(ValueError):
    """An option's value lies outside its setting's declared range; the message names both."""


class Declared:
    """The options a parser takes from the settings' declarations; `check` range-checks their
    parsed values with each declaration's own parser after `parse_args`."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser
        self._fields: dict[str, tuple[str, Field]] = {}  # dest -> (flag, the declared field)

    def add(
        self,
        cls: type,
        name: str,
        flag: str | None = None,
        *,
        default: Any = _SAME,
        help: str | None = None,
    ) -> None:
        """`flag` (default --NAME) for field `name` of settings dataclass `cls`, with its
        declared help unless `help` is given, and its declared default unless `default` is."""
        declared = declaration(cls, name)
        flag = flag or "--" + name.replace("_", "-")
        action = self.parser.add_argument(
            flag,
            type=KIND.get(str(declared.type), str),
            default=declared.default if default is _SAME else default,
            help=declared.metadata["help"] if help is None else help,
        )
        self._fields[action.dest] = (flag, declared)

    def check(self, args: argparse.Namespace) -> None:
        """Raise OptionError naming the option when a given value is outside the setting's
        declared range (None means "the app's setting" and is always allowed)."""
        for dest, (flag, declared) in self._fields.items():
            value = getattr(args, dest)
            if value is None:
                continue
            try:
                declared.metadata["parse"](str(value))
            except ValueError as exc:
                raise OptionError(f"{flag} {value}: {exc}") from None


def declaration(cls: type, name: str) -> Field:
    """The field `name` of settings dataclass `cls`, declared with `setting(...)`."""
    for f in fields(cls):
        if f.name == name and "env" in f.metadata and f.default is not MISSING:
            return f
    raise KeyError(f"{cls.__name__}.{name} is not a declared setting")
