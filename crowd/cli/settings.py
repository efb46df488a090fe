"""`python -m crowd settings`: the settings table (the README's) in Markdown, made from the
declarations in `crowd.config` (tests/test_config.py keeps the README in step with it)."""

from __future__ import annotations

from typing import Any

from crowd.config import declared


def settings_table() -> str:
    """The README's settings table, in Markdown: variable, default, range, meaning."""
    lines = ["| variable | default | range | meaning |", "|---|---|---|---|"]
    for _, default, meta in declared():
        names = ", ".join(f"`{n}`" for n in meta["env"])
        shown = meta["shown"] or _shown(default)
        allowed = getattr(meta["parse"], "range", "")
        lines.append(f"| {names} | {shown} | {allowed} | {meta['help']} |")
    return "\n".join(lines) + "\n"


def _shown(default: Any) -> str:
    if default is None:
        return "unset"
    return f"`{str(default).lower()}`" if isinstance(default, bool) else f"`{default}`"


def main(argv: list[str]) -> int:
    print(settings_table(), end="")
    return 0
