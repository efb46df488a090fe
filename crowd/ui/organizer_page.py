"""The organizer page (its own route, not linked from the volunteer page): unlock with the key,
then campaign settings, rounds and live jobs, moderation, data quality and the export download.
Layout and wiring only; the handlers live in `organizer.py`."""

from __future__ import annotations

from typing import Any

import gradio as gr

from crowd.references import MAX_FILE_BYTES, MAX_ROWS
from crowd.ui.campaign_form import campaign_form
from crowd.ui.components import confirm_row
from crowd.ui.organizer import CORRECTION_COLUMNS, JOB_COLUMNS, OrganizerHandlers
from crowd.ui.organizer_tables import RESULT_COLUMNS, RESULT_TAIL
from crowd.ui.organizer_trust import gold_section, rings_section
from crowd.ui.quality import QualityHandlers, quality_tab, wire_quality
from crowd.ui.replication_view import ReplicationHandlers

JOBS_TICK_S = 3.0
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


def organizer_page(handlers: OrganizerHandlers, oauth: bool) -> None:
    """Build the page inside the current Blocks route and wire its events."""
    gr.Markdown("# Organizer")
    with gr.Row(equal_height=True):
        key = gr.Textbox(label="Organizer key", type="password", scale=4, elem_id="org-key")
        unlock = gr.Button("Unlock", variant="primary", scale=1, elem_id="org-unlock")
    if oauth:
        gr.Markdown(
            "Members of the organizing Hugging Face organisation: sign in, then press "
            "Unlock with the key box empty."
        )
        gr.LoginButton()
    with gr.Column(visible=False, elem_id="org-panel") as panel:
        status = gr.Markdown(elem_id="org-status")
        with gr.Tab("Rounds and jobs"):
            rounds = _rounds_section()
            runner = _runner_section()
        with gr.Tab("Campaign settings"):
            form, save, saved = _settings_section()
            references = _references_section()
        with gr.Tab("Moderation"):
            moderation = _moderation_section()
        with gr.Tab("Data quality"):
            quality = quality_tab()
            quality.update(rings_section())
        with gr.Tab("Export"):
            gr.Markdown(
                "TRL-ready JSONL and Parquet (SFT, DPO, KTO, emotion labels), raw "
                "events, rounds and points, and a dataset card, in one zip. Hidden "
                "corrections and banned participants are left out."
            )
            build = gr.Button("Build the export", elem_id="org-export")
            download = gr.File(label="Download", interactive=False, elem_id="org-download")
            model = _model_export_section()
        with gr.Tab("Replication"):
            replication = _replication_section()
    timer = gr.Timer(JOBS_TICK_S)

    show_references = dict(
        fn=handlers.wired(handlers.references),
        inputs=[key],
        outputs=[references["summary"]],
        show_progress="hidden",
        api_visibility="private",
    )
    unlock.click(
        handlers.wired(handlers.unlock),
        [key],
        [key, panel, status, *form],
        api_name="organizer_unlock",
    ).then(**show_references)
    key.submit(
        handlers.wired(handlers.unlock),
        [key],
        [key, panel, status, *form],
        api_visibility="private",
    ).then(**show_references)
    save.click(
        handlers.wired(handlers.save_settings), [key, *form], [saved], api_name="organizer_settings"
    ).then(**show_references)
    references["load"].click(
        handlers.wired(handlers.load_references),
        [key, references["file"]],
        [references["summary"], references["file"]],
        api_name="organizer_references",
    )
    close = rounds["confirm"]
    rounds["close"].click(
        handlers.wired(handlers.ask_close),
        [key],
        [close["row"], close["text"], close["about"]],
        api_visibility="private",
    )
    close["yes"].click(
        handlers.wired(handlers.close_round),
        [key, close["about"]],
        [status, close["row"]],
        api_name="organizer_close",
    )
    timer.tick(
        handlers.wired(handlers.live),
        [key],
        [status, rounds["jobs"], rounds["results"], rounds["notes"]],
        show_progress="hidden",
        api_visibility="private",
    )
    for action in ("cancel", "retry"):
        rounds[action].click(
            handlers.wired(handlers.job_action(action)),
            [key, rounds["job_id"]],
            [rounds["jobs"]],
            api_name=f"organizer_{action}",
        )
    _wire_runner(handlers, key, timer, runner)
    _wire_moderation(handlers, key, moderation)
    _wire_replication(handlers, ReplicationHandlers(handlers.organizer), key, replication)
    wire_quality(QualityHandlers(handlers.organizer), key, quality, handlers.wired)
    build.click(handlers.wired(handlers.export), [key], [download], api_name="organizer_export")
    model["build"].click(
        handlers.wired(handlers.export_model),
        [key, model["round"], model["merged"]],
        [model["download"]],
        api_name="organizer_export_model",
    )


def _wire_runner(
    handlers: OrganizerHandlers, key: gr.Textbox, timer: gr.Timer, runner: gr.Markdown
) -> None:
    timer.tick(
        handlers.wired(handlers.runner),
        [key],
        [runner],
        show_progress="hidden",
        api_visibility="private",
    )


def _runner_section() -> gr.Markdown:
    """Where round jobs run (CROWD_ROUND_RUNNER), the latest job's state and its cost so far,
    and on a failure its error and the end of its log."""
    gr.Markdown("### Where rounds train")
    return gr.Markdown("Unlock to see where round jobs run.", elem_id="org-runner")


def _wire_moderation(handlers: OrganizerHandlers, key: gr.Textbox, m: dict) -> None:
    m["refresh"].click(
        handlers.wired(handlers.corrections), [key], [m["table"]], api_name="organizer_corrections"
    )
    m["table"].select(
        handlers.pick, None, [m["correction_id"], m["participant_id"]], api_visibility="private"
    )
    quiet: dict = dict(api_visibility="private")
    hide, ban = m["confirm_hide"], m["confirm_ban"]
    m["hide"].click(
        handlers.wired(handlers.ask_hide),
        [key, m["correction_id"]],
        [hide["row"], hide["text"]],
        **quiet,
    )
    hide["yes"].click(
        handlers.wired(handlers.hide),
        [key, m["correction_id"]],
        [m["table"], hide["row"]],
        api_name="organizer_hide",
    )
    m["ban"].click(
        handlers.wired(handlers.ask_ban),
        [key, m["participant_id"], m["reason"]],
        [ban["row"], ban["text"]],
        **quiet,
    )
    ban["yes"].click(
        handlers.wired(handlers.ban),
        [key, m["participant_id"], m["reason"]],
        [m["table"], ban["row"]],
        api_name="organizer_ban",
    )
    for verdict, button in (("endorse", "confirm_good"), ("reject", "confirm_bad")):
        m[button].click(
            handlers.wired(handlers.confirm(verdict)),
            [key, m["correction_id"]],
            [m["table"]],
            api_name=f"organizer_{button}",
        )


def _replication_section() -> dict:
    r: dict[str, Any] = {}
    gr.Markdown(
        "Every commit is streamed by Litestream to the replica (CROWD_REPLICA); a restart "
        "restores from it. The replica is restored into a temporary file now and then, so one "
        "that no longer restores shows here, not at the next restart."
    )
    r["refresh"] = gr.Button("Check replication", elem_id="org-replication-refresh")
    r["text"] = gr.Markdown(elem_id="org-replication")
    return r


def _wire_replication(
    wiring: OrganizerHandlers, handlers: ReplicationHandlers, key: gr.Textbox, r: dict
) -> None:
    r["refresh"].click(
        wiring.wired(handlers.show), [key], [r["text"]], api_name="organizer_replication"
    )


def _rounds_section() -> dict[str, Any]:
    r: dict[str, Any] = {}
    gr.Markdown(
        "Closing a round opens the next one at once; the worker then trains each "
        "group's candidate, judges them on the held-out set and crowns the best."
    )
    r["close"] = gr.Button("Close the round now", variant="stop", elem_id="org-close")
    r["confirm"] = confirm_row("org-confirm-close", "Yes, close it")
    r["confirm"]["about"] = gr.State(None)  # the round number the question named
    r["results"] = gr.Dataframe(
        headers=[*RESULT_COLUMNS, *RESULT_TAIL],
        interactive=False,
        label="Rounds: the winner, the metric of the champion and of each group's model, the "
        "points awarded (newest first; — = the group sat the round out)",
        elem_id="org-results",
        wrap=True,
    )
    r["jobs"] = gr.Dataframe(
        headers=JOB_COLUMNS,
        interactive=False,
        label="Training jobs (live)",
        elem_id="org-jobs",
        wrap=True,
    )
    with gr.Row(equal_height=True):
        # Textboxes, not Numbers: an empty gr.Number shows (and sends) 0
        r["job_id"] = gr.Textbox(label="Job id", placeholder="e.g. 12", max_length=12, scale=2)
        r["cancel"] = gr.Button("Cancel job", scale=1)
        r["retry"] = gr.Button("Retry job", scale=1)
    r["notes"] = gr.Markdown(elem_id="org-notes")
    return r


def _settings_section() -> tuple[list, gr.Button, gr.Markdown]:
    """The campaign form (`crowd.ui.campaign_form`: every setting of the spec) and its button."""
    form = campaign_form()
    save = gr.Button("Save settings", variant="primary", elem_id="org-save")
    saved = gr.Markdown()
    return form, save, saved


def _references_section() -> dict:
    gr.Markdown(REFERENCE_HELP)
    r = {}
    r["file"] = gr.File(
        label="Reference rows (.jsonl or .json)",
        file_types=[".jsonl", ".json"],
        type="filepath",
        height=140,
        elem_id="org-references-file",
    )
    r["load"] = gr.Button("Load reference rows", elem_id="org-references-load")  # type: ignore[assignment]
    r["summary"] = gr.Markdown(elem_id="org-references")  # type: ignore[assignment]
    return r


def _moderation_section() -> dict[str, Any]:
    m: dict[str, Any] = {}
    m["refresh"] = gr.Button("Show recent corrections", elem_id="org-refresh")
    gr.Markdown("Click a row to fill in its ids below.")
    m["table"] = gr.Dataframe(
        headers=CORRECTION_COLUMNS,
        interactive=False,
        wrap=True,
        label="Recent corrections",
        elem_id="org-corrections",
    )
    with gr.Row(equal_height=True):
        m["correction_id"] = gr.Textbox(
            label="Correction id", placeholder="click a row, or type its id", max_length=12, scale=2
        )
        m["hide"] = gr.Button("Hide correction", scale=1, elem_id="org-hide")
    m["confirm_hide"] = confirm_row("org-confirm-hide", "Yes, hide it")
    with gr.Row(equal_height=True):
        m["participant_id"] = gr.Textbox(label="Participant id", scale=2)
        m["reason"] = gr.Textbox(label="Reason (kept with the ban)", scale=2)
        m["ban"] = gr.Button("Ban participant", variant="stop", scale=1, elem_id="org-ban")
    m["confirm_ban"] = confirm_row("org-confirm-ban", "Yes, ban them")
    m.update(gold_section())
    return m


def _model_export_section() -> dict[str, Any]:
    m: dict[str, Any] = {}
    gr.Markdown(
        "### The champion model\nThe champion after a finished round as a PEFT LoRA adapter (or "
        "merged into the base model), with its tokenizer and chat template, a model card (how "
        "it was made, round by round) and the matching data export, in one zip: what `python "
        "-m crowd export-model` writes."
    )
    with gr.Row(equal_height=True):
        m["round"] = gr.Textbox(
            label="Round (empty: the last finished)",
            max_length=6,
            scale=2,
            elem_id="org-model-round",
        )
        m["merged"] = gr.Checkbox(label="Merged full model (larger)", scale=1)
        m["build"] = gr.Button("Build the model export", scale=1, elem_id="org-export-model")
    m["download"] = gr.File(label="Download the model", interactive=False, elem_id="org-model-file")
    return m
