"""The organizer page (its own route, not linked from the volunteer page): unlock with the key,
then campaign settings, rounds and live jobs, moderation, data quality and the export download.
Layout and wiring only; the handlers live in `organizer.py`."""

from __future__ import annotations

from typing import Any

import gradio as gr

from crowd.emotions import GOEMOTIONS_LABELS
from crowd.groups import GROUPING_METHODS
from crowd.references import MAX_FILE_BYTES, MAX_ROWS
from crowd.ui.organizer import CORRECTION_COLUMNS, FORM_FIELDS, JOB_COLUMNS, OrganizerHandlers
from crowd.ui.quality import ALPHA_COLUMNS, QUEUE_COLUMNS, QualityHandlers
from storage.vocabulary import MAX_GROUPS, POINTS_RULES, TASKS, TRAINING_MODES
from storage.vocabulary import ROUND_POLICIES as POLICIES

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
            quality = _quality_section()
        with gr.Tab("Export"):
            gr.Markdown(
                "TRL-ready JSONL and Parquet (SFT, DPO, KTO, emotion labels), raw "
                "events, rounds and points, and a dataset card, in one zip. Hidden "
                "corrections and banned participants are left out."
            )
            build = gr.Button("Build the export", elem_id="org-export")
            download = gr.File(label="Download", interactive=False, elem_id="org-download")
            model = _model_export_section()
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
    rounds["close"].click(
        handlers.wired(handlers.close_round), [key], [status], api_name="organizer_close"
    )
    timer.tick(
        handlers.wired(handlers.live),
        [key],
        [status, rounds["jobs"]],
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
    _wire_quality(QualityHandlers(handlers.organizer), key, quality)
    build.click(handlers.export, [key], [download], api_name="organizer_export")
    model["build"].click(
        handlers.export_model,
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
    m["hide"].click(
        handlers.wired(handlers.hide),
        [key, m["correction_id"]],
        [m["table"]],
        api_name="organizer_hide",
    )
    m["ban"].click(
        handlers.wired(handlers.ban),
        [key, m["participant_id"], m["reason"]],
        [m["table"]],
        api_name="organizer_ban",
    )


def _wire_quality(handlers: QualityHandlers, key: gr.Textbox, q: dict) -> None:
    view = [q["summary"], q["alpha"], q["queue"]]
    q["refresh"].click(handlers.view, [key], view, api_name="organizer_quality")
    q["queue"].select(handlers.pick, None, [q["participant_id"]], api_visibility="private")
    for action in ("hide", "unhide"):
        q[action].click(
            handlers.act(action),
            [key, q["participant_id"]],
            view,
            api_name=f"organizer_{action}_person",
        )
    q["ban"].click(
        handlers.act("ban"),
        [key, q["participant_id"], q["reason"]],
        view,
        api_visibility="private",  # the Moderation tab's organizer_ban is the API for bans
    )


def _rounds_section() -> dict:
    r = {}
    gr.Markdown(
        "Closing a round opens the next one at once; the worker then trains each "
        "group's candidate, judges them on the held-out set and crowns the best."
    )
    r["close"] = gr.Button("Close the round now", variant="stop", elem_id="org-close")
    r["jobs"] = gr.Dataframe(  # type: ignore[assignment]
        headers=JOB_COLUMNS,
        interactive=False,
        label="Training jobs (live)",
        elem_id="org-jobs",
        wrap=True,
    )
    with gr.Row(equal_height=True):
        # Textboxes, not Numbers: an empty gr.Number shows (and sends) 0
        r["job_id"] = gr.Textbox(label="Job id", placeholder="e.g. 12", max_length=12, scale=2)  # type: ignore[assignment]
        r["cancel"] = gr.Button("Cancel job", scale=1)
        r["retry"] = gr.Button("Retry job", scale=1)
    return r


def _settings_section() -> tuple[list, gr.Button, gr.Markdown]:
    """The campaign form, components in `FORM_FIELDS` order."""
    with gr.Row():
        name = gr.Textbox(label="Campaign name", max_length=120)
        licence = gr.Textbox(label="Licence of the contributions", max_length=120)
    with gr.Row():
        task = gr.Radio(list(TASKS), label="Task")
        target = gr.Dropdown(["", *GOEMOTIONS_LABELS], label="Target emotion (emotion task)")
        n_groups = gr.Number(
            label="Groups (from the next round)", precision=0, minimum=1, maximum=MAX_GROUPS
        )
    prompts = gr.Textbox(label="Suggested prompts, one per line", lines=4)
    with gr.Row():
        policy = gr.Radio(list(POLICIES), label="Round closes")
        seconds = gr.Number(label="…after seconds (timer)", precision=0)
        count = gr.Number(label="…after corrections per group (count)", precision=0)
    with gr.Row():
        grouping = gr.Dropdown(list(GROUPING_METHODS), label="Regrouping")
        points = gr.Radio(list(POINTS_RULES), label="Points rule")
        training = gr.Radio(list(TRAINING_MODES), label="Training")
    with gr.Row():
        min_corrections = gr.Number(label="Min corrections to train a group", precision=0)
        heldout = gr.Slider(0, 0.85, step=0.05, label="Held-out share")
        margin = gr.Number(label="Win margin (metric units)")
    with gr.Row():
        reviews_on = gr.Checkbox(
            label="Peer review: volunteers review each other's corrections, and rejected ones "
            "do not train",
            elem_id="org-reviews-on",
        )
        min_reviews = gr.Number(
            label="Reviews a verdict needs",
            precision=0,
            minimum=1,
            maximum=20,
            elem_id="org-min-reviews",
        )
        person_cap = gr.Slider(
            0.05,
            1.0,
            step=0.05,
            label="Most of a group's training one person may supply (1 = no cap)",
            elem_id="org-person-cap",
        )
    require_login = gr.Checkbox(
        label="Corrections need a Hugging Face sign-in (anyone may still chat; works on a Space "
        "with hf_oauth)",
        elem_id="org-require-login",
    )
    save = gr.Button("Save settings", variant="primary", elem_id="org-save")
    saved = gr.Markdown()
    by_name = {
        "name": name,
        "task": task,
        "target_emotion": target,
        "n_groups": n_groups,
        "prompts": prompts,
        "round_policy": policy,
        "round_seconds": seconds,
        "round_corrections": count,
        "grouping": grouping,
        "points_rule": points,
        "training_mode": training,
        "min_corrections": min_corrections,
        "heldout_share": heldout,
        "win_margin": margin,
        "licence": licence,
        "reviews_on": reviews_on,
        "min_reviews": min_reviews,
        "person_cap": person_cap,
        "require_login": require_login,
    }
    form = [by_name[field] for field in FORM_FIELDS]  # a setting without a control fails here
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


def _moderation_section() -> dict:
    m = {}
    m["refresh"] = gr.Button("Show recent corrections", elem_id="org-refresh")
    gr.Markdown("Click a row to fill in its ids below.")
    m["table"] = gr.Dataframe(  # type: ignore[assignment]
        headers=CORRECTION_COLUMNS,
        interactive=False,
        wrap=True,
        label="Recent corrections",
        elem_id="org-corrections",
    )
    with gr.Row(equal_height=True):
        m["correction_id"] = gr.Textbox(  # type: ignore[assignment]
            label="Correction id", placeholder="click a row, or type its id", max_length=12, scale=2
        )
        m["hide"] = gr.Button("Hide correction", scale=1)
    with gr.Row(equal_height=True):
        m["participant_id"] = gr.Textbox(label="Participant id", scale=2)  # type: ignore[assignment]
        m["reason"] = gr.Textbox(label="Reason (kept with the ban)", scale=2)  # type: ignore[assignment]
        m["ban"] = gr.Button("Ban participant", variant="stop", scale=1)
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


def _quality_section() -> dict:
    q: dict[str, Any] = {}
    gr.Markdown(
        "How far volunteers agree (Krippendorff's alpha: 1 perfect, 0 chance, below 0 "
        "systematic disagreement), how much of their work was reviewed, and who looks like a "
        "troll. Hiding a person takes all of their data out of training, evaluation, points "
        "and export, and can be undone; a ban also stops them from acting."
    )
    q["refresh"] = gr.Button("Compute the quality view", elem_id="org-quality")
    q["summary"] = gr.Markdown(elem_id="org-quality-summary")
    q["alpha"] = gr.Dataframe(
        headers=ALPHA_COLUMNS,
        interactive=False,
        label="Agreement per round (all rounds first)",
        elem_id="org-alpha",
    )
    q["queue"] = gr.Dataframe(
        headers=QUEUE_COLUMNS,
        interactive=False,
        label="People, most suspicious first",
        elem_id="org-suspects",
    )
    with gr.Row(equal_height=True):
        q["participant_id"] = gr.Textbox(label="Participant id", scale=2, elem_id="org-q-person")
        q["hide"] = gr.Button("Hide their data", scale=1, elem_id="org-q-hide")
        q["unhide"] = gr.Button("Show it again", scale=1, elem_id="org-q-unhide")
    with gr.Row(equal_height=True):
        q["reason"] = gr.Textbox(label="Reason (kept with the ban)", scale=3)
        q["ban"] = gr.Button("Ban", variant="stop", scale=1, elem_id="org-q-ban")
    return q
