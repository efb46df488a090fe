"""Reference data an organizer loads into the held-out set, next to the crowd's own held-out
share: texts that show the target emotion (the engine scores them and their mean vector becomes
the emotion target) and preference pairs (judged like held-out pairs).

A file is JSONL (one row per line) or one JSON list of rows:

    {"kind": "emotion", "text": "What a wonderful surprise!", "label": "joy"}
    {"kind": "pair", "prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", ...}

`label` is optional; a pair has `chosen` and `rejected` replies, and its `prompt` is the chat
they answer, or null for the engine's default prompt. Every row is checked before any is
stored; a refusal names the line (or list item) at fault.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from crowd.emotions import GOEMOTIONS_LABELS
from crowd.limits import Refused, clean_text
from storage.vocabulary import CHAT_ROLES

MAX_FILE_BYTES = 5_000_000
MAX_ROWS = 10_000
MAX_TEXT_CHARS = 4000  # as a volunteer's rewrite
MAX_PROMPT_TURNS = 20
KINDS = ("emotion", "pair")
FIELDS = {"emotion": {"kind", "text", "label"}, "pair": {"kind", "prompt", "chosen", "rejected"}}


def read_reference_file(data: bytes) -> list[tuple[str, object]]:
    """The rows of a JSONL file or a JSON list as (place, value), place naming where the row
    is ('line 7', 'item 3'); Refused when the file is too big, not UTF-8, not JSON or empty.
    Blank lines of a JSONL file are skipped but still counted."""
    _check_size(len(data))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Refused(f"The file is not UTF-8 text (byte {exc.start}).") from None
    rows = _json_list(text) if text.lstrip().startswith("[") else _json_lines(text)
    if not rows:
        raise Refused("The file has no rows.")
    if len(rows) > MAX_ROWS:
        raise Refused(f"The file has more than {MAX_ROWS:,} rows, the limit per file; split it.")
    return rows


def read_reference_path(path: str | Path) -> list[tuple[str, object]]:
    """`read_reference_file` on an uploaded file, refusing an oversized one before reading it."""
    try:
        _check_size(Path(path).stat().st_size)
        data = Path(path).read_bytes()
    except OSError as exc:
        raise Refused(f"Cannot read the uploaded file ({exc.strerror or exc}).") from None
    return read_reference_file(data)


def _check_size(n_bytes: int) -> None:
    if n_bytes > MAX_FILE_BYTES:
        raise Refused(
            f"The file is {n_bytes / 1e6:.1f} MB; the limit is {MAX_FILE_BYTES / 1e6:g} MB."
        )


def _json_list(text: str) -> list[tuple[str, object]]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Refused(f"Line {exc.lineno} is not valid JSON ({exc.msg}).") from None
    if not isinstance(items, list):
        raise Refused("A JSON file must hold one list of rows.")
    return [(f"item {i}", item) for i, item in enumerate(items, 1)]


def _json_lines(text: str) -> list[tuple[str, object]]:
    rows = []
    # split on newlines only: splitlines() would also cut at U+2028, which JSON strings may hold
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rows.append((f"line {lineno}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise Refused(f"Line {lineno} is not valid JSON ({exc.msg}).") from None
        if len(rows) > MAX_ROWS:  # stop reading: the count alone refuses the file
            break
    return rows


def clean_references(rows: Iterable[tuple[str, object]]) -> list[dict]:
    """Every (place, row) checked and put in the stored form (see `clean_reference`); Refused
    naming the first bad place, and how many other places are bad too."""
    clean, problems = [], []
    for place, row in rows:
        try:
            clean.append(clean_reference(row))
        except Refused as exc:
            problems.append(f"{place[:1].upper()}{place[1:]}: {exc}")
    if problems:
        more = len(problems) - 1
        suffix = f" ({more} more row{'s' * (more != 1)} with problems.)" if more else ""
        raise Refused(f"{problems[0]}{suffix}")
    return clean


def clean_reference(row: object) -> dict:
    """One row as stored in `reference_texts` (a pair's prompt as JSON text, or None for the
    default prompt), or Refused saying what is wrong with it."""
    if not isinstance(row, dict):
        raise Refused('A row is a JSON object like {"kind": "emotion", "text": ...}.')
    kind = row.get("kind")
    if kind not in KINDS:
        raise Refused(f'The kind is {str(kind)[:20]!r}; it must be "emotion" or "pair".')
    unknown = set(row) - FIELDS[kind]
    if unknown:
        raise Refused(f"Unknown field(s) for a {kind} row: {', '.join(sorted(unknown))[:80]}.")
    if kind == "emotion":
        label = row.get("label")
        if label is not None and label not in GOEMOTIONS_LABELS:
            raise Refused(f"The label {str(label)[:30]!r} is not one of the 28 GoEmotions labels.")
        return {
            "kind": "emotion",
            "text": clean_text(row.get("text"), "text", MAX_TEXT_CHARS),
            "label": label,
        }
    chosen = clean_text(row.get("chosen"), "chosen reply", MAX_TEXT_CHARS)
    rejected = clean_text(row.get("rejected"), "rejected reply", MAX_TEXT_CHARS)
    if chosen == rejected:
        raise Refused("The chosen and rejected replies are the same.")
    prompt = clean_prompt(row.get("prompt"))
    return {
        "kind": "pair",
        "prompt": None if prompt is None else json.dumps(prompt, ensure_ascii=False),
        "chosen": chosen,
        "rejected": rejected,
    }


def clean_prompt(prompt: object) -> list[dict] | None:
    """A pair's prompt: None (the default prompt) or 1-20 chat messages {"role", "content"},
    the last one the user's (the pair's replies answer it)."""
    if prompt is None:
        return None
    if not isinstance(prompt, list) or not 1 <= len(prompt) <= MAX_PROMPT_TURNS:
        raise Refused(
            f"The prompt is a list of 1-{MAX_PROMPT_TURNS} chat messages "
            '[{"role": "user", "content": ...}], or null.'
        )
    messages = []
    for message in prompt:
        if (
            not isinstance(message, dict)
            or set(message) != {"role", "content"}
            or message["role"] not in CHAT_ROLES
        ):
            raise Refused(
                'Each prompt message is {"role": "system" | "user" | "assistant", "content": ...}.'
            )
        messages.append(
            {
                "role": message["role"],
                "content": clean_text(message["content"], "prompt message", MAX_TEXT_CHARS),
            }
        )
    if messages[-1]["role"] != "user":
        raise Refused("The prompt's last message must be the user's.")
    return messages


def row_key(row: dict) -> tuple:
    """What makes two stored rows the same reference: loading a file twice adds nothing."""
    return (
        row["kind"],
        row.get("text"),
        row.get("label"),
        row.get("prompt"),
        row.get("chosen"),
        row.get("rejected"),
    )
