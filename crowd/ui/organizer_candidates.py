"""The organizer's settings for a round's candidates and judge (issue 28): the union, its
line and memory, the merged candidate and the judge (crowd.rounds.candidates, .judge)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from crowd.organizer import MAX_MEMORY_ROUNDS
from storage.vocabulary import JUDGES, MERGE_METHODS

CANDIDATES_HELP = """### Candidates and judging
Beside one candidate per group, a round can train a **union** candidate on every group's
trusted corrections together, let it (and, if you like, each group) train again on the trusted
corrections of the last few rounds (**memory**: slow emotions need more passes), and add a
**merged** candidate that combines the group adapters (TIES by default). The **sequential**
judge starts every model on a quarter of the replies, drops candidates clearly behind, and goes
on only while the leader's lead over the champion is unclear. What each adds, and costs:
`docs/results/candidates.md`. A candidate that cannot be built is noted under the jobs table
(Round notes); the round goes on with the others."""


def candidates_controls() -> dict[str, Any]:
    """The round's extra candidates and its judge (crowd.rounds.candidates, .judge)."""
    gr.Markdown(CANDIDATES_HELP)
    with gr.Row():
        union = gr.Checkbox(
            label="Union candidate: one more, trained on every group's trusted corrections",
            elem_id="org-union",
        )
        union_continues = gr.Checkbox(
            label="…which goes on from the last round's union while nothing is crowned",
            elem_id="org-union-continues",
        )
    with gr.Row():
        memory = gr.Number(
            label="Memory: earlier rounds the union trains on again (0 = off)",
            precision=0,
            minimum=0,
            maximum=MAX_MEMORY_ROUNDS,
            elem_id="org-memory",
        )
        memory_groups = gr.Checkbox(
            label="…and each group's candidate on its members' earlier corrections",
            elem_id="org-memory-groups",
        )
    with gr.Row():
        merge = gr.Dropdown(
            list(MERGE_METHODS),
            label="Merged candidate: the group adapters merged by PEFT (off, or how)",
            elem_id="org-merge",
        )
        judge = gr.Radio(
            list(JUDGES),
            label="Judge (emotion task): fixed replies per model, or in stages",
            elem_id="org-judge",
        )
    return {
        "union_candidate": union,
        "union_continues": union_continues,
        "memory_rounds": memory,
        "memory_groups": memory_groups,
        "merge_method": merge,
        "judge": judge,
    }
