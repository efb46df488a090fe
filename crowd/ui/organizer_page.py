"""The organizer page (its own route, not linked from the volunteer page): unlock with the key,
then campaign settings, rounds and live jobs, moderation, data quality and the export download.
Wiring only: the sections' layout is in `organizer_sections.py`, the handlers in
`organizer.py`."""

from __future__ import annotations

import gradio as gr
from gradio.events import Dependency

from crowd.ui.organizer import OrganizerHandlers
from crowd.ui.organizer_sections import (
    Moderation,
    Replication,
    Rounds,
    model_export_section,
    moderation_section,
    references_section,
    replication_section,
    rounds_section,
    runner_section,
    settings_section,
)
from crowd.ui.organizer_trust import rings_section
from crowd.ui.quality import QualityHandlers, quality_tab, wire_quality
from crowd.ui.replication_view import ReplicationHandlers

JOBS_TICK_S = 3.0


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
            rounds = rounds_section()
            runner = runner_section()
        with gr.Tab("Campaign settings"):
            form, save, saved = settings_section()
            references = references_section()
        with gr.Tab("Moderation"):
            moderation = moderation_section()
        with gr.Tab("Data quality"):
            quality = quality_tab()
            rings = rings_section()
        with gr.Tab("Export"):
            gr.Markdown(
                "TRL-ready JSONL and Parquet (SFT, DPO, KTO, emotion labels), raw "
                "events, rounds and points, and a dataset card, in one zip. Hidden "
                "corrections and banned participants are left out."
            )
            build = gr.Button("Build the export", elem_id="org-export")
            download = gr.File(label="Download", interactive=False, elem_id="org-download")
            model = model_export_section()
        with gr.Tab("Replication"):
            replication = replication_section()
    timer = gr.Timer(JOBS_TICK_S)

    def show_references(event: Dependency) -> None:
        event.then(
            handlers.wired(handlers.references),
            [key],
            [references.summary],
            show_progress="hidden",
            api_visibility="private",
        )

    unlocked = [key, panel, status, *form]
    show_references(
        unlock.click(handlers.wired(handlers.unlock), [key], unlocked, api_name="organizer_unlock")
    )
    show_references(
        key.submit(handlers.wired(handlers.unlock), [key], unlocked, api_visibility="private")
    )
    show_references(
        save.click(
            handlers.wired(handlers.save_settings),
            [key, *form],
            [saved],
            api_name="organizer_settings",
        )
    )
    references.load.click(
        handlers.wired(handlers.load_references),
        [key, references.file],
        [references.summary, references.file],
        api_name="organizer_references",
    )
    _wire_rounds(handlers, key, timer, status, rounds)
    _wire_runner(handlers, key, timer, runner)
    _wire_moderation(handlers, key, moderation)
    _wire_replication(handlers, ReplicationHandlers(handlers.organizer), key, replication)
    wire_quality(QualityHandlers(handlers.organizer), key, quality, rings, handlers.wired)
    build.click(handlers.wired(handlers.export), [key], [download], api_name="organizer_export")
    model.build.click(
        handlers.wired(handlers.export_model),
        [key, model.round, model.merged],
        [model.download],
        api_name="organizer_export_model",
    )


def _wire_rounds(
    handlers: OrganizerHandlers,
    key: gr.Textbox,
    timer: gr.Timer,
    status: gr.Markdown,
    rounds: Rounds,
) -> None:
    close = rounds.confirm
    rounds.close.click(
        handlers.wired(handlers.ask_close),
        [key],
        [close.row, close.text, rounds.about],
        api_visibility="private",
    )
    close.yes.click(
        handlers.wired(handlers.close_round),
        [key, rounds.about],
        [status, close.row],
        api_name="organizer_close",
    )
    timer.tick(
        handlers.wired(handlers.live),
        [key],
        [status, rounds.jobs, rounds.results, rounds.notes],
        show_progress="hidden",
        api_visibility="private",
    )
    for action, button in (("cancel", rounds.cancel), ("retry", rounds.retry)):
        button.click(
            handlers.wired(handlers.job_action(action)),
            [key, rounds.job_id],
            [rounds.jobs],
            api_name=f"organizer_{action}",
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


def _wire_moderation(handlers: OrganizerHandlers, key: gr.Textbox, m: Moderation) -> None:
    m.refresh.click(
        handlers.wired(handlers.corrections), [key], [m.table], api_name="organizer_corrections"
    )
    m.table.select(
        handlers.pick, None, [m.correction_id, m.participant_id], api_visibility="private"
    )
    hide, ban = m.confirm_hide, m.confirm_ban
    m.hide.click(
        handlers.wired(handlers.ask_hide),
        [key, m.correction_id],
        [hide.row, hide.text],
        api_visibility="private",
    )
    hide.yes.click(
        handlers.wired(handlers.hide),
        [key, m.correction_id],
        [m.table, hide.row],
        api_name="organizer_hide",
    )
    m.ban.click(
        handlers.wired(handlers.ask_ban),
        [key, m.participant_id, m.reason],
        [ban.row, ban.text],
        api_visibility="private",
    )
    ban.yes.click(
        handlers.wired(handlers.ban),
        [key, m.participant_id, m.reason],
        [m.table, ban.row],
        api_name="organizer_ban",
    )
    gold = m.gold
    for verdict, name, button in (
        ("endorse", "confirm_good", gold.confirm_good),
        ("reject", "confirm_bad", gold.confirm_bad),
    ):
        button.click(
            handlers.wired(handlers.confirm(verdict)),
            [key, m.correction_id],
            [m.table],
            api_name=f"organizer_{name}",
        )


def _wire_replication(
    wiring: OrganizerHandlers, handlers: ReplicationHandlers, key: gr.Textbox, r: Replication
) -> None:
    r.refresh.click(wiring.wired(handlers.show), [key], [r.text], api_name="organizer_replication")
