"""The export's dataset card: a README.md with Hugging Face front matter, so the export folder
can be pushed to the Hub as a dataset repository as it is. Pure: summary in, Markdown out."""

from __future__ import annotations

import json
from typing import Any

# Hugging Face's licence ids for the licences a campaign is likely to use; others -> "other".
HF_LICENSES = frozenset(
    "apache-2.0 mit cc0-1.0 cc-by-4.0 cc-by-sa-4.0 cc-by-nc-4.0 cc-by-nc-sa-4.0 cc-by-nd-4.0 "
    "cc-by-nc-nd-4.0 cc-by-3.0 cc-by-sa-3.0 odc-by odbl pddl cdla-permissive-2.0 "
    "cdla-sharing-1.0 gpl-3.0 bsd-3-clause".split()
)

FILES = {
    "sft": "chat transcripts ending in the preferred reply (rewrites, A/B picks): `SFTTrainer`",
    "dpo": "a prompt with a chosen and a rejected reply (rewrite vs original, A/B picks): "
    "`DPOTrainer`",
    "kto": "a prompt and one reply labelled desirable or not (ratings, rewrites and originals, "
    "A/B picks, replies judged both bad): `KTOTrainer`",
    "emotions": "a model reply and the emotion a volunteer read in it (GoEmotions labels)",
    "events": "every correction as recorded, with its provenance, including withdrawn ones",
}

COLUMNS = {
    "messages": "chat messages (`role`, `content`), the last one the assistant's target reply",
    "prompt": "chat messages up to the reply (`role`, `content`)",
    "chosen / rejected / completion": "one assistant message",
    "label": "kto: true = desirable; emotions: the emotion label",
    "text / annotator": "emotions: the reply labelled, as the labeller saw it; their pseudonym",
    "source": "the kind of correction the row comes from: rewrite, choice, rating, emotion",
    "split": "`train`, or `heldout` (kept aside by the app to judge the groups' models)",
    "round / group": "the round number and the 0-based group of the volunteer",
    "correction_id": "the correction's id, the key into events",
    "participant": "events: a pseudonym (salted hash, stable within this export only)",
    "participant_name / hf_username": "events: set only for volunteers who opted in",
    "undone / hidden": "events: withdrawn by the author / moderated out (never training rows)",
    "model_version_id": "events: the model version that wrote the corrected reply",
    "original / shown / other_reply": "events: the reply as the model wrote it / as the "
    "volunteer saw it when acting (their own rewrite, if they had rewritten it) / reply B as shown",
}


def hf_license(licence: str) -> list[str]:
    """Front matter lines for a campaign licence such as 'CC-BY-4.0'."""
    key = licence.strip().lower()
    if key in HF_LICENSES:
        return [f"license: {key}"]
    return ["license: other", f"license_name: {json.dumps(key.replace(' ', '-') or 'unknown')}"]


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M" if n < 1_000_000 else "1M<n<10M"


def front_matter(summary: dict[str, Any]) -> str:
    campaign = summary["campaign"]
    lines = ["---", *hf_license(campaign["licence"])]
    lines.append(f"pretty_name: {json.dumps('Crowd-SFT: ' + campaign['name'])}")
    lines += ["task_categories:", "- text-generation", "- text-classification"]
    lines += ["tags:", *(f"- {t}" for t in ("crowd-sft", "sft", "dpo", "kto", "human-feedback"))]
    lines += ["size_categories:", f"- {size_category(summary['counts']['events'])}"]
    lines.append("configs:")
    for name in FILES:
        lines += [f"- config_name: {name}", "  data_files:", "  - split: train"]
        lines.append(f"    path: {name}.parquet")
        if name == "sft":
            lines.append("  default: true")
    return "\n".join(lines + ["---", ""])


def _scope_text(summary: dict[str, Any]) -> str:
    rounds = [str(r["number"]) for r in summary["rounds"]]
    groups = summary["groups"]
    left_out = [
        what
        for what, included in (
            ("hidden corrections", summary["include_hidden"]),
            ("banned participants", summary["include_banned"]),
        )
        if not included
    ]
    return (
        f"Exported {summary['generated_at']}. Rounds: {', '.join(rounds) or 'none'}. Groups: "
        + ("all" if groups is None else ", ".join(map(str, groups)))
        + ". "
        + (f"Left out: {' and '.join(left_out)}." if left_out else "Moderated data included.")
    )


def _campaign_text(campaign: dict[str, Any]) -> list[str]:
    task = campaign["task"]
    if task == "emotion":
        goal = f"replies should convey **{campaign['target_emotion'] or 'a target emotion'}**"
    else:
        goal = "replies should be what people prefer"
    return [
        f"- Campaign: {campaign['name']} (id {campaign['id']}), task **{task}**: {goal}.",
        f"- {campaign['n_groups']} groups; training mode `{campaign['training_mode']}`; "
        f"{campaign['heldout_share']:.0%} of corrections held out for judging.",
        f"- Licence: {campaign['licence']}.",
    ]


def _rounds_table(rounds: list[dict[str, Any]]) -> list[str]:
    lines = ["| round | state | improved | winning group | opened | finished |"]
    lines.append("|---|---|---|---|---|---|")
    for r in rounds:
        improved = {1: "yes", 0: "no"}.get(r["improved"], "")
        winner = "" if r["winner_group"] is None else str(r["winner_group"])
        lines.append(
            f"| {r['number']} | {r['state']} | {improved} | {winner} | {r['opened_at']} |"
            f" {r['finished_at'] or ''} |"
        )
    return lines


USAGE = """## Load

```python
from datasets import load_dataset

sft = load_dataset("json", data_files="sft.jsonl", split="train")
dpo = load_dataset("parquet", data_files="dpo.parquet", split="train")
# once pushed to the Hub: load_dataset("OWNER/NAME", "dpo", split="train")
train = dpo.filter(lambda row: row["split"] == "train")  # leave the held-out rows for evaluation
```

## Train with TRL

```python
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

model = "HuggingFaceTB/SmolLM2-135M-Instruct"
SFTTrainer(model=model, train_dataset=sft, args=SFTConfig(output_dir="sft")).train()
DPOTrainer(model=model, train_dataset=train, args=DPOConfig(output_dir="dpo")).train()
```

`kto.jsonl` has TRL's unpaired preference format for `KTOTrainer`; `emotions.jsonl` trains a
text classifier (`text` -> `label`). The `messages`, `prompt`, `chosen`, `rejected` and
`completion` columns are in TRL's conversational format, so the model's chat template applies.
"""

PRIVACY = """## Privacy

Volunteers appear under pseudonyms: a salted hash of their id, with a fresh secret salt for
every export, so the same volunteer has the same pseudonym throughout this export and cannot be
linked across exports. Names and Hugging Face usernames appear only for volunteers who opted in.
Corrections withdrawn by their authors are in `events` only (flagged `undone`).
"""


def render_card(summary: dict[str, Any]) -> str:
    """The README.md of an export: front matter, campaign, files and counts, schema, rounds,
    how to load and train, privacy."""
    campaign, counts = summary["campaign"], summary["counts"]
    lines = [front_matter(summary), f"# Crowd-SFT: {campaign['name']}", ""]
    lines += [
        "Volunteers chatted with a language model in competing groups and corrected its "
        "replies; each round, every group's corrections fine-tuned a LoRA candidate and the best "
        "one, if it beat the champion, served everyone next round. These are their corrections.",
        "",
        *_campaign_text(campaign),
        f"- {_scope_text(summary)}",
        "",
        "## Files",
        "",
        "| file | rows | what |",
        "|---|---|---|",
    ]
    for name, what in FILES.items():
        lines.append(f"| `{name}.jsonl` / `{name}.parquet` | {counts[name]} | {what} |")
    lines.append(f"| `rounds.csv` | {counts['rounds']} | per round and group: metric, winner |")
    lines.append(f"| `points.csv` | {counts['points']} | the points ledger, pseudonymised |")
    lines += ["", "## Columns", "", "| column | meaning |", "|---|---|"]
    lines += [f"| `{column}` | {meaning} |" for column, meaning in COLUMNS.items()]
    lines += ["", "## Rounds", "", *_rounds_table(summary["rounds"]), "", USAGE, PRIVACY]
    lines += [f"## Licence\n\n{campaign['licence']}, the campaign's licence.\n"]
    return "\n".join(lines)
