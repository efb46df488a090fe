"""Shared pieces of the UI: turning refusals into warnings, rendering plain data as inert HTML
or tables, and reading the copy in `assets/`. Everything a person typed is escaped here."""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr
import pandas as pd

from crowd.limits import Refused

ASSETS = Path(__file__).resolve().parent.parent.parent / "assets"
CSS_FILE = ASSETS / "style.css"
TERMS_FILE = ASSETS / "terms.md"


def warn(refused: Refused | ValueError) -> None:
    """Show a refusal as a yellow toast. Gradio renders toast text as HTML, and a refusal may
    quote what the person typed, so it is escaped."""
    gr.Warning(html.escape(str(refused)))


def ack(message: str) -> None:
    gr.Info(html.escape(message), duration=4)


def address_of(request: gr.Request | None) -> str | None:
    """The caller's network address for per-address rate limits (best effort: the first hop a
    proxy reports, else the socket's peer)."""
    if request is None:
        return None
    forwarded = (request.headers.get("x-forwarded-for") or "").split(",")[0].strip()
    if forwarded:
        return forwarded[:64]
    client = getattr(request, "client", None)
    return getattr(client, "host", None)


def css() -> str:
    return CSS_FILE.read_text(encoding="utf-8")


def terms(licence: str, campaign_name: str) -> str:
    """The data-use terms (Markdown) with the campaign's licence filled in."""
    text = TERMS_FILE.read_text(encoding="utf-8")
    return text.replace("{licence}", licence_name(licence)).replace("{campaign}", campaign_name)


def licence_name(licence: str | None) -> str:
    """'CC-BY-4.0' -> 'CC BY 4.0'; other licences as written."""
    licence = licence or "CC-BY-4.0"
    return licence.replace("-", " ") if licence.upper().startswith("CC-") else licence


def duration(seconds: int | None) -> str:
    """Seconds as 'm:ss' (or 'h:mm:ss'); None means the round has no timer."""
    if seconds is None:
        return "until the organizer closes it"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d} left" if hours else f"{minutes}:{secs:02d} left"


def banner_html(name: str, banner: dict) -> str:
    """The task banner: who I am, my group, the task, the round, time left, my group's work."""
    e = html.escape
    if banner["task"] == "emotion":
        task = f"make the replies convey <b>{e(banner['target_emotion'] or 'the target')}</b>"
    else:
        task = "make the replies ones people <b>prefer</b>"
    corrections = banner["group_corrections"]
    return (
        f'<div class="crowd-banner" style="--group:{e(banner["group_colour"])}">'
        f'<div class="crowd-who"><span class="crowd-dot"></span>'
        f'<span class="crowd-name">{e(name)}</span> in group '
        f'<b class="crowd-group">{e(banner["group_name"])}</b></div>'
        f'<div class="crowd-task">Task: {task}</div>'
        f'<div class="crowd-facts"><span>Round <b>{int(banner["round"])}</b>, '
        f'{e(duration(banner["seconds_left"]))}</span>'
        f'<span>Your group: <b>{int(corrections)}</b> correction{"s" * (corrections != 1)} '
        f'this round</span>'
        f'<span>Your points: <b class="crowd-points">{points(banner["points"])}</b></span>'
        f"</div></div>"
    )


def points(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.2f}"


def reason_text(reason: object) -> str:
    """A ledger reason (the points rule's dict) as one readable line."""
    if not isinstance(reason, dict):
        return str(reason)
    for key in ("text", "why", "summary"):
        if isinstance(reason.get(key), str):
            return reason[key]
    parts = []
    for key, value in reason.items():
        if isinstance(value, float):
            value = f"{value:.3g}"
        elif isinstance(value, (list, dict)):
            continue
        parts.append(f"{key.replace('_', ' ')} {value}")
    return ", ".join(parts)


def ledger_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"round": r["round"], "points": round(r["amount"], 2), "why": reason_text(r["reason"])}
         for r in rows],
        columns=["round", "points", "why"],
    )


def table(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)


def metric_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["round", "value", "metric", "series"])


def samples_table(before: list[str], after: list[str], limit: int = 3) -> pd.DataFrame:
    rows = [{"before (champion)": b, "after (winner)": a}
            for b, a in list(zip(before, after))[:limit]]
    return pd.DataFrame(rows, columns=["before (champion)", "after (winner)"])
