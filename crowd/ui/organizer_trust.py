"""The organizer page's sections about who counts as whom (issue 26): gold items in Moderation,
and the rings (source groups, collusion clusters, one action for a whole group) in Data quality
(who may contribute is part of the campaign form, `campaign_form.py`). Layout only;
`organizer_page.py` wires them."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from crowd.ui.components import ConfirmRow, confirm_row
from crowd.ui.quality import CLUSTER_COLUMNS, SOURCE_COLUMNS


@dataclass(frozen=True)
class Gold:
    """The organizer's verdict buttons on the correction in the Moderation tab's box."""

    confirm_good: gr.Button
    confirm_bad: gr.Button


def gold_section() -> Gold:
    """The organizer's own verdict on a correction: it decides it, and it becomes gold."""
    gr.Markdown(
        "**Gold items.** Confirm a correction (its id in the box above) as good or bad: your "
        "verdict decides it, and it is dealt unmarked to reviewers, about one item in eight, "
        "with your reference examples. Reviewers who endorse bad gold or reject good gold "
        "weigh less.",
        elem_id="org-gold-help",
    )
    with gr.Row(equal_height=True):
        good = gr.Button("Confirm good (gold)", scale=1, elem_id="org-confirm-good")
        bad = gr.Button("Confirm bad (gold)", scale=1, elem_id="org-confirm-bad")
    return Gold(good, bad)


@dataclass(frozen=True)
class Rings:
    """Source groups and collusion clusters, and the buttons that act on a whole group."""

    hide_group: gr.Button
    ban_group: gr.Button
    confirm_hide_group: ConfirmRow
    confirm_ban_group: ConfirmRow
    sources: gr.Dataframe
    clusters: gr.Dataframe


def rings_section() -> Rings:
    """Who shares a source, the collusion clusters, and one action for a whole group."""
    gr.Markdown(
        "### Rings\nA **source group** is one voice: the pseudonyms seen on one network (a /24, "
        "or a /56 for IPv6; a venue's people count alone) or one Hugging Face account. A "
        "**collusion cluster** is a set of voices that endorse each other far more often than "
        "the others endorse the same authors (dealing would spread their reviews by chance). "
        "Hiding or banning a group takes in the person's whole source group and, when it is in "
        "a cluster, the whole cluster.",
        elem_id="org-rings-help",
    )
    with gr.Row(equal_height=True):
        hide_group = gr.Button("Hide their whole group", scale=1, elem_id="org-q-hide-group")
        ban_group = gr.Button(
            "Ban their whole group", variant="stop", scale=1, elem_id="org-q-ban-group"
        )
    return Rings(
        hide_group,
        ban_group,
        confirm_row("org-q-confirm-hide-group", "Yes, hide the whole group"),
        confirm_row("org-q-confirm-ban-group", "Yes, ban the whole group"),
        _table(
            SOURCE_COLUMNS,
            "Pseudonyms per source (groups of two or more, or in a cluster)",
            "org-sources",
        ),
        _table(CLUSTER_COLUMNS, "Collusion clusters", "org-clusters"),
    )


def _table(headers: list[str], label: str, elem_id: str) -> gr.Dataframe:
    return gr.Dataframe(headers=headers, interactive=False, label=label, elem_id=elem_id, wrap=True)
