"""The organizer's campaign form, built from `crowd.campaigns.CampaignSpec`: one widget per
setting from its declaration (label, help, range or choices), laid out by the setting's part,
and the form's values read back as `Organizer.update_campaign` arguments. A setting added to
the spec appears here without a change; its help and range are the spec's."""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from crowd.campaign_fields import PARTS, Declared
from crowd.campaigns import campaign_settings
from storage.rows import Campaign

SETTINGS = campaign_settings()
FORM_FIELDS = tuple(name for part in PARTS for name, d in SETTINGS.items() if d.part == part)
"""The form's components and values, in this order: the spec's, part by part."""

WIDGET_MIN_WIDTH = 280  # px: one widget a line on a phone, three on a 1400 px desktop
RADIO_MAX_CHOICES = 4  # more choices: a dropdown

CONTRIBUTORS_HELP = """### Who may contribute
Pseudonyms are free: one person can join twenty from one address. The app counts **voices**, not
pseudonyms: everyone on one network (a /24, or a /56 for IPv6) is one voice for the share cap,
standing and independent review, and so is each Hugging Face account. **Requiring a Hugging Face
sign-in is the strongest defence** against one person with many names, and the only one against
someone who also has many addresses (a VPN); restricting contributors to an organisation's
members is stronger still. Anyone may still chat."""

CANDIDATES_HELP = """### Candidates and judging
Beside one candidate per group, a round can train a **union** candidate on every group's
trusted corrections together, let it (and, if you like, each group) train again on the trusted
corrections of the last few rounds (**memory**: slow emotions need more passes), and add a
**merged** candidate that combines the group adapters (TIES by default). The **sequential**
judge starts every model on a quarter of the replies, drops candidates clearly behind, and goes
on only while the leader's lead over the champion is unclear. What each adds, and costs:
`docs/results/candidates.md`. A candidate that cannot be built is noted under the jobs table
(Round notes); the round goes on with the others."""

PART_HELP = {
    "contributors": CONTRIBUTORS_HELP,
    "campaign": "### The campaign",
    "rounds": "### Rounds: how they close, regroup, train and judge",
    "trust": "### Peer review and the share cap\nWhat `docs/results/poisoning.md` tells an "
    "organizer to set against a troll: review on, and a cap on any one voice's share.",
    "candidates": CANDIDATES_HELP,
}


def campaign_form() -> list[Any]:
    """The form's widgets, in `FORM_FIELDS` order, part by part under the part's help; a text
    area takes a line of its own, the rest share rows that wrap on a phone."""
    widgets: dict[str, Any] = {}
    for part in PARTS:
        gr.Markdown(PART_HELP.get(part, ""), elem_id=f"org-{part}")
        for run in _rows([n for n in FORM_FIELDS if SETTINGS[n].part == part]):
            with gr.Row():
                for name in run:  # a column each: columns wrap where they do not fit
                    with gr.Column(min_width=WIDGET_MIN_WIDTH):
                        widgets[name] = widget(name, SETTINGS[name])
    return [widgets[name] for name in FORM_FIELDS]


def _rows(names: list[str]) -> list[list[str]]:
    """A part's settings in rows: each text area alone, the others together between them."""
    rows: list[list[str]] = [[]]
    for name in names:
        if _is_area(SETTINGS[name]):
            rows += [[name], []]
        else:
            rows[-1].append(name)
    return [row for row in rows if row]


def _is_area(d: Declared) -> bool:
    return d.kind == "lines" or d.max_lines > 1


def widget(name: str, d: Declared) -> Any:
    """The control for one setting: a checkbox, radio or dropdown, number, slider or textbox."""
    common: dict[str, Any] = dict(
        label=d.label, info=d.help or None, elem_id="org-" + name.replace("_", "-")
    )
    if d.kind == "flag":
        return gr.Checkbox(**common)
    if d.kind == "choice":
        options = ["", *d.choices] if d.optional else list(d.choices)
        if len(options) <= RADIO_MAX_CHOICES:
            return gr.Radio(options, **common)
        return gr.Dropdown(options, **common)
    if d.kind == "int":
        return gr.Number(precision=0, minimum=d.low, maximum=d.high, **common)
    if d.kind == "real" and d.step:
        return gr.Slider(d.low, d.high, step=d.step, **common)
    if d.kind == "real":
        return gr.Number(minimum=d.low, maximum=d.high, **common)
    if d.kind == "lines":
        return gr.Textbox(lines=4, **common)
    return gr.Textbox(max_length=d.max_chars, lines=d.max_lines, **common)


def form_values(campaign: Campaign) -> list:
    """The stored campaign's settings as the form's values, in FORM_FIELDS order: flags (0/1)
    as booleans, prompts (JSON) one per line, an unset optional choice or text as ''."""
    return [_shown(SETTINGS[name], campaign.get(name)) for name in FORM_FIELDS]


def _shown(d: Declared, value: Any) -> Any:
    if d.kind == "flag":
        return bool(value)
    if d.kind == "lines":
        return "\n".join(json.loads(value or "[]"))
    if d.optional and d.kind in ("choice", "text"):
        return value or ""
    return value


def form_changes(values: tuple) -> dict:
    """The form's values as `Organizer.update_campaign` arguments, which validates them: whole
    numbers as ints, an empty optional box as None, prompts as their non-empty lines."""
    return {name: _read(SETTINGS[name], value) for name, value in zip(FORM_FIELDS, values)}


def _read(d: Declared, value: Any) -> Any:
    if d.optional and value in ("", None):
        return None
    if d.kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if d.kind == "lines":
        return [line for line in (value or "").splitlines() if line.strip()]
    return value
