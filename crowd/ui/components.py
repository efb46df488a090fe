"""Shared pieces of the UI: turning refusals into warnings, rendering plain data as inert HTML
or tables, and reading the copy in `assets/`. Everything a person typed is shown through
`inert`, the one way volunteer text reaches a page."""

from __future__ import annotations

import html
import html.entities
import re
from dataclasses import dataclass

import gradio as gr
import pandas as pd
from matplotlib.figure import Figure

from crowd.config import ASSETS
from crowd.groups import GROUP_NAMES, group_colour, group_name
from crowd.limits import Refused
from crowd.network import Network, client_address
from crowd.service import Banner

CSS_FILE = ASSETS / "style.css"
TERMS_FILE = ASSETS / "terms.md"


MARKUP_CHARACTERS = frozenset("&<>\"'`*_~{}[]()#+-.!|:/\\@=$%^")
"""Characters that can begin HTML, Markdown (emphasis, links, images, lists, headings, tables,
math) or an automatic link (`http:`, `www.`, `a@b.c`)."""


def inert(text: object, markdown: bool = True) -> str:
    """Volunteer text as HTML that shows exactly what was typed, so no tag, Markdown image,
    link or bare URL comes alive and nothing is fetched. The one renderer of volunteer text:
    the Review tab, the chat, the organizer's tables and the before/after cards all call it.

    `markdown=True` (gr.Markdown, gr.HTML): every character that could begin markup becomes a
    numeric character reference, which renderers display and never parse; line breaks become
    <br>. `markdown=False` (the chat, whose Markdown is off but which renders HTML, and whose
    copy button copies the raw value): only a `<` that could open a tag and an `&` that could
    open a character reference are escaped, so the raw value stays the text as typed in all
    but those cases; a browser displays it exactly as typed."""
    if text is None:
        return ""
    if not markdown:
        return _CHAT_MARKUP.sub(lambda m: "&amp;" if m.group(0) == "&" else "&lt;", str(text))
    lines = str(text).replace("\r\n", "\n").split("\n")
    return "<br>".join(
        "".join(f"&#{ord(ch)};" if ch in MARKUP_CHARACTERS else ch for ch in line) for line in lines
    )


_LEGACY = "|".join(sorted((n for n in html.entities.html5 if not n.endswith(";")), key=len)[::-1])
_CHAT_MARKUP = re.compile(rf"<(?=[A-Za-z!/?])|&(?=#|[A-Za-z][A-Za-z0-9]*;|(?:{_LEGACY}))")
"""A `<` that could open a tag, an `&` that a browser would read as a character reference
(with a semicolon, or one of the legacy names it reads without: `&copy 2020`)."""


def warn(refused: Refused | ValueError) -> None:
    """Show a refusal as a yellow toast. Gradio renders toast text as HTML, and a refusal may
    quote what the person typed, so it is escaped."""
    gr.Warning(html.escape(str(refused)))


def ack(message: str) -> None:
    gr.Info(html.escape(message), duration=4)


def address_of(request: gr.Request | None, trusted: tuple[Network, ...]) -> str | None:
    """The caller's network address for per-address limits: the socket's peer, or behind
    `trusted` proxies the hop they vouch for (`crowd.network.client_address`)."""
    if request is None:
        return None
    client = getattr(request, "client", None)
    headers = getattr(request, "headers", None) or {}
    forwarded = headers.getlist("x-forwarded-for") if hasattr(headers, "getlist") else []
    return client_address(getattr(client, "host", None), forwarded, trusted)


def hub_orgs(profile: dict | None, token: str | None) -> list[str]:
    """The Hugging Face organisations of the logged-in person: from the OAuth profile when the
    Space asked for them, else from `whoami` with their token. Empty when unknown."""
    names = [
        org.get("preferred_username") or org.get("name")
        for org in (profile or {}).get("orgs", [])
        if isinstance(org, dict)
    ]
    if not names and token:
        from huggingface_hub import whoami

        try:
            names = [org.get("name") for org in whoami(token).get("orgs", [])]
        except (OSError, ValueError):  # the Hub is unreachable or the token is stale
            names = []
    return [n for n in names if isinstance(n, str)]


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


def banner_html(name: str, banner: Banner) -> str:
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
        f"{e(duration(banner['seconds_left']))}</span>"
        f"<span>Your group: <b>{int(corrections)}</b> correction{'s' * (corrections != 1)} "
        f"this round</span>"
        f'<span>Your points: <b class="crowd-points">{points(banner["points"])}</b></span>'
        f"</div></div>"
    )


def points(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.2f}"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def reason_text(reason: object) -> str:
    """A ledger reason (the points rule's dict) as one readable line: the group's rank, my
    share of its points, how many of my corrections counted."""
    if not isinstance(reason, dict):
        return str(reason)
    if reason.get("rule") == "review" and isinstance(reason.get("agreeing_reviews"), int):
        return (
            f"Reviews: {reason['agreeing_reviews']} of your "
            f"{reason.get('decided_reviews', reason['agreeing_reviews'])} decided reviews agreed "
            "with the crowd's verdict"
        )
    parts = []
    if reason.get("candidate") in ("union", "merged"):  # the crowd's own candidate won
        together = "all groups'" if reason["candidate"] == "union" else "the merged groups'"
        parts.append(f"the model trained on {together} corrections won")
    elif isinstance(reason.get("group_rank"), int):  # 0 = the best group
        of = f" of {reason['n_groups']}" if reason.get("n_groups") else ""
        parts.append(f"your group ranked {ordinal(reason['group_rank'] + 1)}{of}")
    if isinstance(reason.get("share_of_group"), (int, float)):
        parts.append(f"your share of its points {reason['share_of_group']:.0%}")
    if isinstance(reason.get("items"), int):
        parts.append(f"{reason['items']} of your corrections counted")
    if not parts:  # a rule this page does not know: show its fields as they are
        parts = [
            f"{k.replace('_', ' ')} {f'{v:.3g}' if isinstance(v, float) else v}"
            for k, v in reason.items()
            if not isinstance(v, (list, dict)) and k != "rule"
        ]
    rule = RULE_NAMES.get(str(reason.get("rule")), "")
    return f"{rule}: {', '.join(parts)}" if rule else ", ".join(parts)


RULE_NAMES = {"paper": "Paper rule", "shapley": "Shapley rule"}  # the ledger's `rule`s

REVIEWS = "(reviews)"  # the ledger's group column for review points, which have no group


def ledger_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "round": r["round"],
                "group": REVIEWS if r["group_index"] is None else group_name(r["group_index"]),
                "points": round(r["amount"], 2),
                "why": reason_text(r["reason"]),
            }
            for r in rows
        ],
        columns=["round", "group", "points", "why"],
    )


def table(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)


def metric_figure(rows: list[dict], lower_is_better: bool = True) -> Figure | None:
    """The metric per round: one line per group's candidate (in the group's colour) and the
    champion dashed. Markers, so that a single round shows; None before any round finished.
    (A Figure, not pyplot: handlers run on many threads.)"""
    if not rows:
        return None
    figure = Figure(figsize=(8, 3.2), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for series in sorted({r["series"] for r in rows}, key=lambda s: (s != "champion", s)):
        points = sorted((r["round"], r["value"]) for r in rows if r["series"] == series)
        style = (
            {
                "color": "#111827",
                "linestyle": "--",
                "marker": "s",
                "markersize": 11,
                "markerfacecolor": "none",
            }
            if series == "champion"
            else {"color": series_colour(series), "marker": "o"}
        )
        axes.plot(*zip(*points), label=series, linewidth=2, **style)
    rounds = sorted({r["round"] for r in rows})
    axes.set_xticks(rounds if len(rounds) <= 12 else rounds[:: len(rounds) // 12 + 1])
    axes.set_xlim(rounds[0] - 0.5, rounds[-1] + 0.5)
    axes.set_xlabel("round")
    axes.set_title(
        "The metric per round: each group's candidate and the champion", fontsize="medium"
    )
    better = "lower" if lower_is_better else "higher"
    axes.set_ylabel(f"{rows[0]['metric']} ({better} is better)")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    return figure


def series_colour(name: str) -> str:
    return group_colour(GROUP_NAMES.index(name)) if name in GROUP_NAMES else "#6b7280"


def samples_table(before: list[str], after: list[str], limit: int = 3) -> dict:
    """The same held-out prompts answered by the old champion and the winner; hidden when the
    round kept no samples (a preference round is judged on likelihoods, not samples)."""
    rows = [
        {"before (champion)": b, "after (winner)": a} for b, a in list(zip(before, after))[:limit]
    ]
    frame = pd.DataFrame(rows, columns=["before (champion)", "after (winner)"])
    return gr.update(value=frame, visible=bool(rows))


@dataclass(frozen=True)
class ConfirmRow:
    """A question and two buttons (`confirm_row`)."""

    row: gr.Row
    text: gr.Markdown  # the question
    yes: gr.Button
    no: gr.Button


def confirm_row(elem_id: str, yes: str) -> ConfirmRow:
    """A question and two buttons, hidden until a first click asks (close, hide, ban act on a
    second click, never on one). Cancel only hides it."""
    with gr.Row(visible=False, elem_id=elem_id, elem_classes=["crowd-confirm"]) as row:
        text = gr.Markdown()
        yes_button = gr.Button(yes, variant="stop", scale=0, elem_id=f"{elem_id}-yes")
        no = gr.Button("Cancel", scale=0, elem_id=f"{elem_id}-no")
    no.click(hide_row, None, [row], api_visibility="private")
    return ConfirmRow(row, text, yes_button, no)


def hide_row() -> dict:
    """A confirmation's Cancel: only hides the question (it takes no key and changes nothing)."""
    return gr.update(visible=False)
