"""The organizer page's sections, layout only: each builds its components in the current
Blocks context and returns them as a dataclass, which `organizer_page.py` wires to the
handlers of `organizer.py`."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from crowd.references import MAX_FILE_BYTES, MAX_ROWS
from crowd.ui.campaign_form import campaign_form
from crowd.ui.components import ConfirmRow, confirm_row
from crowd.ui.organizer_tables import CORRECTION_COLUMNS, JOB_COLUMNS, RESULT_COLUMNS, RESULT_TAIL
from crowd.ui.organizer_trust import Gold, gold_section

REFERENCE_HELP = (
    f"""### Reference data
Rows that join the held-out set of every later round, next to the crowd's own held-out share.
A JSONL file (one row per line) or a JSON list of rows, up to {MAX_FILE_BYTES / 1e6:g} MB and
{MAX_ROWS:,} rows. Every row is checked first: one bad row loads nothing, and the warning names
its line. Rows already loaded are skipped.
"""
    + """
- **Emotion task**: texts that show the target emotion. The target vector becomes their mean
  scored vector (with none, the one-hot vector of the target emotion). `label` is optional.
```
{"kind": "emotion", "text": "What a lovely surprise, thank you all!", "label": "joy"}
```
- **Preference task**: pairs judged like the crowd's held-out pairs. `prompt` is `null` (a
  default prompt) or the chat the replies answer, its last message the user's:
  `[{"role": "user", "content": "Any plans today?"}]`.
```
{"kind": "pair", "prompt": null, "chosen": "A walk by the sea, then a book.", "rejected": "No."}
```
"""
)


@dataclass(frozen=True)
class Replication:
    refresh: gr.Button
    text: gr.Markdown


def replication_section() -> Replication:
    gr.Markdown(
        "Every commit is streamed by Litestream to the replica (CROWD_REPLICA); a restart "
        "restores from it. The replica is restored into a temporary file now and then, so one "
        "that no longer restores shows here, not at the next restart."
    )
    return Replication(
        gr.Button("Check replication", elem_id="org-replication-refresh"),
        gr.Markdown(elem_id="org-replication"),
    )


@dataclass(frozen=True)
class Rounds:
    close: gr.Button
    confirm: ConfirmRow  # "close the round now?"
    about: gr.State  # the round number the question named
    results: gr.Dataframe
    jobs: gr.Dataframe
    job_id: gr.Textbox
    cancel: gr.Button
    retry: gr.Button
    notes: gr.Markdown


def rounds_section() -> Rounds:
    gr.Markdown(
        "Closing a round opens the next one at once; the worker then trains each "
        "group's candidate, judges them on the held-out set and crowns the best."
    )
    close = gr.Button("Close the round now", variant="stop", elem_id="org-close")
    confirm = confirm_row("org-confirm-close", "Yes, close it")
    about = gr.State(None)
    results = gr.Dataframe(
        headers=[*RESULT_COLUMNS, *RESULT_TAIL],
        interactive=False,
        label="Rounds: the winner, the metric of the champion and of each group's model, the "
        "points awarded (newest first; — = the group sat the round out)",
        elem_id="org-results",
        wrap=True,
    )
    jobs = gr.Dataframe(
        headers=JOB_COLUMNS,
        interactive=False,
        label="Training jobs (live)",
        elem_id="org-jobs",
        wrap=True,
    )
    with gr.Row(equal_height=True):
        # Textboxes, not Numbers: an empty gr.Number shows (and sends) 0
        job_id = gr.Textbox(label="Job id", placeholder="e.g. 12", max_length=12, scale=2)
        cancel = gr.Button("Cancel job", scale=1)
        retry = gr.Button("Retry job", scale=1)
    notes = gr.Markdown(elem_id="org-notes")
    return Rounds(close, confirm, about, results, jobs, job_id, cancel, retry, notes)


@dataclass(frozen=True)
class References:
    file: gr.File
    load: gr.Button
    summary: gr.Markdown


def references_section() -> References:
    gr.Markdown(REFERENCE_HELP)
    return References(
        gr.File(
            label="Reference rows (.jsonl or .json)",
            file_types=[".jsonl", ".json"],
            type="filepath",
            height=140,
            elem_id="org-references-file",
        ),
        gr.Button("Load reference rows", elem_id="org-references-load"),
        gr.Markdown(elem_id="org-references"),
    )


@dataclass(frozen=True)
class Moderation:
    refresh: gr.Button
    table: gr.Dataframe
    correction_id: gr.Textbox
    hide: gr.Button
    confirm_hide: ConfirmRow
    participant_id: gr.Textbox
    reason: gr.Textbox
    ban: gr.Button
    confirm_ban: ConfirmRow
    gold: Gold


def moderation_section() -> Moderation:
    refresh = gr.Button("Show recent corrections", elem_id="org-refresh")
    gr.Markdown("Click a row to fill in its ids below.")
    table = gr.Dataframe(
        headers=CORRECTION_COLUMNS,
        interactive=False,
        wrap=True,
        label="Recent corrections",
        elem_id="org-corrections",
    )
    with gr.Row(equal_height=True):
        correction_id = gr.Textbox(
            label="Correction id", placeholder="click a row, or type its id", max_length=12, scale=2
        )
        hide = gr.Button("Hide correction", scale=1, elem_id="org-hide")
    confirm_hide = confirm_row("org-confirm-hide", "Yes, hide it")
    with gr.Row(equal_height=True):
        participant_id = gr.Textbox(label="Participant id", scale=2)
        reason = gr.Textbox(label="Reason (kept with the ban)", scale=2)
        ban = gr.Button("Ban participant", variant="stop", scale=1, elem_id="org-ban")
    confirm_ban = confirm_row("org-confirm-ban", "Yes, ban them")
    return Moderation(
        refresh,
        table,
        correction_id,
        hide,
        confirm_hide,
        participant_id,
        reason,
        ban,
        confirm_ban,
        gold_section(),
    )


@dataclass(frozen=True)
class ModelExport:
    round: gr.Textbox
    merged: gr.Checkbox
    build: gr.Button
    download: gr.File


def model_export_section() -> ModelExport:
    gr.Markdown(
        "### The champion model\nThe champion after a finished round as a PEFT LoRA adapter (or "
        "merged into the base model), with its tokenizer and chat template, a model card (how "
        "it was made, round by round) and the matching data export, in one zip: what `python "
        "-m crowd export-model` writes."
    )
    with gr.Row(equal_height=True):
        round_ = gr.Textbox(
            label="Round (empty: the last finished)",
            max_length=6,
            scale=2,
            elem_id="org-model-round",
        )
        merged = gr.Checkbox(label="Merged full model (larger)", scale=1)
        build = gr.Button("Build the model export", scale=1, elem_id="org-export-model")
    download = gr.File(label="Download the model", interactive=False, elem_id="org-model-file")
    return ModelExport(round_, merged, build, download)


def runner_section() -> gr.Markdown:
    """Where round jobs run (CROWD_ROUND_RUNNER), the latest job's state and its cost so far,
    and on a failure its error and the end of its log."""
    gr.Markdown("### Where rounds train")
    return gr.Markdown("Unlock to see where round jobs run.", elem_id="org-runner")


def settings_section() -> tuple[list, gr.Button, gr.Markdown]:
    """The campaign form (`crowd.ui.campaign_form`: every setting of the spec) and its button."""
    form = campaign_form()
    save = gr.Button("Save settings", variant="primary", elem_id="org-save")
    saved = gr.Markdown()
    return form, save, saved
