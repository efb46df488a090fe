"""The exported model's card: a README.md with Hugging Face front matter and a metric chart.

Pure: a `CardFacts` in, Markdown (and SVG) out. What the card says comes from the database (see
`crowd.model_export`); no names of volunteers ever reach it, only counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from storage.card import hf_license
from storage.rows import Campaign

CHART_NAME = "metric.svg"
METRIC_TEXT = {
    "emotion_l2": "mean L2 distance of sampled replies' emotion vectors to the target (lower is "
    "better)",
    "pref_accuracy": "share of held-out pairs where the chosen reply is more likely than the "
    "rejected one (higher is better)",
}


@dataclass(frozen=True)
class CardFacts:
    """Everything the card states. `rounds`: one dict per finished round up to the exported one,
    with `number`, `improved`, `winner_id`, `champion_id` and `entries` (one per judged model:
    `version_id`, `group` (None for the incumbent champion), `value`, `status`)."""

    campaign: Campaign
    round_number: int
    version_id: int
    base_model: str  # what the adapter was trained on: a Hub id or a local folder
    base_hub_id: str | None  # the Hub id, when known (front matter `base_model`)
    base_note: str  # what differs from that base ('' when nothing)
    merged: bool
    metric: str | None
    lower_is_better: bool
    rounds: list[dict[str, Any]]
    lineage: list[dict[str, Any]]  # crowned versions behind the export: round, group, counts
    volunteers: int  # distinct volunteers behind the whole lineage
    corrections: int
    training: dict[str, Any]
    data_command: str
    generated_at: str
    tags: list[str] = field(default_factory=list)


def front_matter(facts: CardFacts) -> str:
    lines = ["---"]
    if facts.base_hub_id:
        lines.append(f"base_model: {json.dumps(facts.base_hub_id)}")
        if facts.merged:
            lines.append("base_model_relation: finetune")
    lines.append(f"library_name: {'transformers' if facts.merged else 'peft'}")
    lines += hf_license(facts.campaign["licence"])
    lines.append("pipeline_tag: text-generation")
    modes = facts.campaign["training_mode"].split("+")  # 'sft+dpo' -> both tags
    tags = ["crowd-sft", "lora", "human-feedback", *modes, *facts.tags]
    lines += ["tags:", *(f"- {json.dumps(t)}" for t in dict.fromkeys(tags))]
    return "\n".join(lines + ["---", ""])


def _goal(campaign: Campaign) -> str:
    if campaign["task"] == "emotion":
        return f"replies that convey **{campaign['target_emotion'] or 'a target emotion'}**"
    return "replies that people prefer"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def rounds_table(facts: CardFacts) -> list[str]:
    """One row per judged model per round: the incumbent champion and each group's candidate,
    with the held-out loss (the preference task's tie-breaker) where it was measured."""
    lines = [
        "| round | model | version | held-out metric | held-out loss | outcome |",
        "|---|---|---|---|---|---|",
    ]
    for r in facts.rounds:
        for e in r["entries"]:
            model = (
                "champion (incumbent)"
                if e["group"] is None
                else f"{e['group']} candidate"
                if isinstance(e["group"], str)
                else f"group {e['group']} candidate"
            )
            value = _fmt(e["value"])
            if e["metric"] not in (None, facts.metric):  # the campaign's task changed since
                value += f" ({e['metric']})"
            lines.append(
                f"| {r['number']} | {model} | v{e['version_id']} | {value} | {_fmt(e['loss'])} |"
                f" {_outcome(r, e)} |"
            )
    return lines


def _outcome(round_: dict[str, Any], entry: dict[str, Any]) -> str:
    if entry["version_id"] == round_["winner_id"]:
        return "crowned" if round_["improved"] else "kept"
    return "failed to train" if entry["status"] == "failed" else ""


def lineage_table(facts: CardFacts) -> list[str]:
    lines = ["| round | group | version | volunteers | corrections |", "|---|---|---|---|---|"]
    for v in facts.lineage:
        lines.append(
            f"| {v['round']} | {v['group']} | v{v['version_id']} | {v['volunteers']} |"
            f" {v['corrections']} |"
        )
    return lines


def _usage(facts: CardFacts) -> str:
    base = facts.base_hub_id or "BASE_MODEL"
    if facts.merged:
        return """```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("THIS_FOLDER_OR_REPO")
tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER_OR_REPO")
```

The LoRA adapter alone is in `adapter/` (`PeftModel.from_pretrained(base, "adapter")`)."""
    return f"""```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "THIS_FOLDER_OR_REPO")
tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER_OR_REPO")  # with the chat template
```"""


def render_model_card(facts: CardFacts) -> str:
    """The README.md of a model export: front matter, what it is, the campaign, who made it,
    the rounds (chart and table), training, use, the matching data, licence."""
    sections = [
        front_matter(facts) + _intro(facts),
        "## Campaign\n\n" + _campaign(facts),
        "## Who made it\n\n" + _people(facts),
        "## Rounds\n\n"
        f"![{facts.metric or 'metric'} per round]({CHART_NAME})\n\n"
        + "\n".join(rounds_table(facts)),
        "## Training\n\n" + "\n".join(f"- {k}: `{v}`" for k, v in facts.training.items()),
        "## Use\n\n" + _usage(facts),
        "## Data\n\nThe corrections of the same campaign and rounds are in [the matching data "
        "export](data/README.md) (`data/`), TRL-ready, with their own card. To make it again: "
        f"`{facts.data_command}`.",
        f"## Licence\n\nThe volunteers' contributions are under {facts.campaign['licence']}, the "
        "campaign's licence; the base model keeps its own licence.\n\n"
        f"Exported {facts.generated_at} by Crowd-SFT.",
    ]
    return "\n\n".join(sections) + "\n"


def _intro(facts: CardFacts) -> str:
    kind = "The full model, a LoRA adapter merged into" if facts.merged else "A LoRA adapter for"
    return (
        f"# Crowd-SFT: {facts.campaign['name']}, round {facts.round_number} champion\n\n"
        f"{kind} `{facts.base_model}`, aligned live by volunteers in competing groups. Each "
        "round every group's corrections fine-tuned a LoRA candidate from the champion; all "
        "candidates and the champion were judged on the same held-out set, and a candidate "
        "replaced the champion only if it beat it."
        + (f" {facts.base_note}" if facts.base_note else "")
    )


def _campaign(facts: CardFacts) -> str:
    c = facts.campaign
    metric = METRIC_TEXT.get(facts.metric or "", facts.metric or "no metric recorded")
    return (
        f"- {c['name']} (id {c['id']}): task **{c['task']}**, aiming for {_goal(c)}.\n"
        f"- {c['n_groups']} groups; training mode `{c['training_mode']}`; "
        f"{c['heldout_share']:.0%} of each round's corrections held out for judging.\n"
        f"- This is model version v{facts.version_id}, the champion after round "
        f"{facts.round_number}.\n"
        f"- Held-out metric: {metric}."
    )


def _people(facts: CardFacts) -> str:
    return (
        f"{facts.volunteers} volunteers and {facts.corrections} corrections trained the crowned "
        "versions this model descends from (counts only, no names: live corrections of the "
        "training split that taught something in the campaign's training mode):\n\n"
        + "\n".join(lineage_table(facts))
    )


def metric_chart_svg(facts: CardFacts, width: int = 560, height: int = 280) -> str:
    """A small self-contained SVG: every judged model's metric per round (dots) and the champion
    after each round (line). No plotting library, so the export needs nothing extra."""
    points = [
        (r["number"], e)
        for r in facts.rounds
        for e in r["entries"]
        if e["value"] is not None and e["metric"] == facts.metric
    ]
    left, right, top, bottom = 56, 16, 48, 36
    if not points:
        return _svg(width, height, ['<text x="20" y="40">no evaluations</text>'])
    values = [e["value"] for _, e in points]
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    first, last = facts.rounds[0]["number"], facts.rounds[-1]["number"]

    def x(n: float) -> float:
        span = max(1, last - first)
        return left + (n - first) / span * (width - left - right) if last > first else width / 2

    def y(v: float) -> float:
        return top + (high - v) / (high - low) * (height - top - bottom)

    parts = _axes(facts, x, y, low, high, width, height, left, bottom)
    champions = [(r["number"], _value_of(r, r["winner_id"])) for r in facts.rounds]
    line = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in champions if v is not None)
    parts.append(f'<polyline fill="none" stroke="#2563eb" stroke-width="2" points="{line}"/>')
    for n, e in points:
        colour = "#2563eb" if e["group"] is None else "#f59e0b"
        parts.append(f'<circle cx="{x(n):.1f}" cy="{y(e["value"]):.1f}" r="4" fill="{colour}"/>')
    return _svg(width, height, parts)


def _value_of(r: dict[str, Any], version_id: int) -> float | None:
    return next((e["value"] for e in r["entries"] if e["version_id"] == version_id), None)


def _axes(facts, x, y, low, high, width, height, left, bottom) -> list[str]:
    better = "lower" if facts.lower_is_better else "higher"
    base = height - bottom
    parts = [
        f'<text x="{left}" y="18" font-size="13">{facts.metric or "metric"} per round '
        f"({better} is better)</text>",
        f'<text x="{left}" y="34" font-size="11">blue line: the champion after each round; '
        "orange dots: the groups' candidates</text>",
        f'<line x1="{left}" y1="{base}" x2="{width - 16}" y2="{base}" stroke="#555"/>',
        f'<line x1="{left}" y1="44" x2="{left}" y2="{base}" stroke="#555"/>',
        f'<text x="4" y="{y(high) + 4:.1f}" font-size="11">{high:.3g}</text>',
        f'<text x="4" y="{y(low) + 4:.1f}" font-size="11">{low:.3g}</text>',
    ]
    for r in facts.rounds:
        parts.append(
            f'<text x="{x(r["number"]) - 4:.1f}" y="{base + 16}" font-size="11">{r["number"]}</text>'
        )
    parts.append(f'<text x="{width / 2 - 20:.0f}" y="{height - 4}" font-size="11">round</text>')
    return parts


def _svg(width: int, height: int, parts: list[str]) -> str:
    body = "\n  ".join(parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">\n'
        f'  <rect width="100%" height="100%" fill="white"/>\n  {body}\n</svg>\n'
    )
