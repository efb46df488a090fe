"""The candidates a round's bundle lists: one per group, and, by the campaign's settings,
stronger ones built from the same trusted data (docs/results/candidates.md measures each).
Decided once, when the round closes into its bundle (crowd.rounds.record); the job makes each
by its kind (crowd.rounds.job.CANDIDATE_KINDS).

- **group**: a group's LoRA from the champion, on the group's training material of the round
  (`crowd.rounds.material.training_material`: the one rule of what trains, with its caps per voice).
- **union** (`union_candidate`): from the champion, on every group's training material of the
  round together, so a round's whole trusted crowd trains one model. When it wins, its points
  go to the round's contributors by the campaign's rule with the whole crowd as one group
  (crowd.rounds.crown).
- **memory** (`memory_rounds` = w): the union also trains on the training material of the w
  rounds before this one, each taken by the same `training_material` rule for its own round (so
  the caps apply round by round, and a correction rejected since trains no more); with
  `memory_groups`, each group's candidate also trains on its contributors' own material of
  those rounds. The bundle carries these examples per candidate (`Bundle.memory`), so the job
  needs nothing else; the record keeps their correction ids (`recorded_settings`). Only this
  round's contributions earn points: earlier ones were paid in their own round. Only rounds
  past their held-out draw count (a round still open or closing has no split yet).
- **union line** (`union_continues`): while no candidate is crowned, the union starts from the
  previous round's union instead of the champion (the bundle carries that adapter), so its
  training accumulates round after round as one pooled model's would, and it trains at least
  as many example-passes as the group candidates it stands for together (`scale`: the
  trainer's `min_examples` counts once per group candidate).
- **merged** (`merge_method`): the trained group candidates' adapters merged by PEFT's
  `add_weighted_adapter` (crowd.training.merge) inside the job, at no training cost. "The best
  group adapters" are every group candidate that trained: ranking them first would need a
  judgement before the merge, and TIES' sign election already discounts a source that disagrees.

A candidate that cannot be built leaves a note in the round (`storage.rounds.add_round_notes`,
shown on the organizer page) and the round goes on with the others: a union with no trusted
data and a memory window set longer than the default that reaches past the campaign's first
round are noted here; a merge of adapters of different ranks or targets fails in the job and is
noted at the crowning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlite_utils import Database

from crowd.campaigns import DEFAULT_MEMORY_ROUNDS
from crowd.rounds.bundle import ADAPTER_FILES, Candidate, Example
from crowd.rounds.material import GroupData, training_material
from crowd.training.merge import DENSITY
from storage import rounds as store
from storage.rows import Campaign, Round, Version

MEMORY_STATES = ("training", "evaluating", "done")
"""Rounds whose held-out share is drawn: their train split is final, so memory may read it."""
UNION = "union"
MERGED = "merged"


@dataclass
class Plan:
    """What a round's bundle lists: its candidates, the earlier examples each also trains on,
    the adapter a candidate starts from when not the champion (relative to the data dir), and
    notes on what could not be built."""

    candidates: list[Candidate]
    memory: dict[str, list[Example]] = field(default_factory=dict)
    starts: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def plan(
    db: Database,
    campaign: Campaign,
    round_: Round,
    groups: dict[int, list[Example]],
    sat_out: dict[int, str],
    data_dir: Path | None = None,
) -> Plan:
    """The candidates of `round_` under the campaign's settings, from its groups' examples
    (`groups`, every group) and the groups that sit the round out (`sat_out`); `data_dir`:
    where installed adapters are (a union line whose adapter is gone starts afresh)."""
    result = Plan(
        [Candidate(f"g{g}", "group", g, (g,)) for g in sorted(groups) if g not in sat_out]
    )
    if campaign.get("union_candidate") or campaign.get("memory_groups"):  # memory's users
        earlier, result.notes = memory(db, campaign, round_)
    else:
        earlier = []
    if campaign.get("memory_groups") and earlier:
        authors = _authors(db, round_)
        for c in result.candidates:
            people = {authors[e.correction_id] for e in groups[c.group or 0]}
            own = [e for g, e, person in earlier if person in people]
            if own:
                result.memory[c.name] = own
    if campaign.get("union_candidate"):
        remembered = [e for _, e, _ in earlier]
        _add_union(db, campaign, round_, (groups, remembered), data_dir, result)
    method = campaign.get("merge_method") or "off"
    group_names = tuple(c.name for c in result.candidates if c.kind == "group")
    if method != "off" and len(group_names) >= 2:
        result.candidates.append(
            Candidate(MERGED, MERGED, None, inputs=group_names, method=method, density=DENSITY)
        )
    elif method != "off":
        result.notes.append(
            f"The merged candidate was not built: a merge needs at least two group candidates; "
            f"this round has {len(group_names)}."
        )
    return result


def _add_union(
    db: Database,
    campaign: Campaign,
    round_: Round,
    examples: tuple[dict[int, list[Example]], list[Example]],
    data_dir: Path | None,
    result: Plan,
) -> None:
    """The union candidate into `result`, or a note saying why there is none. `examples`: the
    round's by group, and the memory's."""
    groups, earlier = examples
    sources = tuple(g for g in sorted(groups) if any(usable(e, campaign) for e in groups[g]))
    remembered = [e for e in earlier if usable(e, campaign)]
    if not sources and not remembered:
        what = "preference pairs" if campaign["training_mode"] == "dpo" else "examples"
        result.notes.append(
            f"The union candidate was not trained: no group has trusted {what} in this round "
            "or the memory window."
        )
        return
    scale = max(1, sum(c.kind == "group" for c in result.candidates))
    line = union_line(db, round_) if campaign.get("union_continues") else None
    start = None if line is None else line["adapter_path"]  # union_line's have an adapter
    if start is not None and data_dir is not None and not _installed(data_dir / start):
        result.notes.append(
            "The union candidate starts from the champion: the last round's union adapter "
            f"({start}) is missing from the data folder."
        )
        start = None
    result.candidates.append(
        Candidate(UNION, UNION, None, sources, scale=scale, start=start is not None)
    )
    if remembered:
        result.memory[UNION] = remembered
    if start is not None:
        result.starts[UNION] = start


def _installed(adapter_dir: Path) -> bool:
    return all((adapter_dir / name).is_file() for name in ADAPTER_FILES)


def usable(example: Example, campaign: Campaign) -> bool:
    """Whether `example` teaches something in the campaign's training mode."""
    return example.pair is not None if campaign["training_mode"] == "dpo" else bool(example.sft)


def memory(
    db: Database, campaign: Campaign, round_: Round
) -> tuple[list[tuple[int, Example, str]], list[str]]:
    """(group, example, author) of the training material of the `memory_rounds` rounds before
    `round_` (those past their held-out draw), oldest round first, and a note when a window
    the organizer set longer than the default reaches past the campaign's first round (every
    campaign grows into the default's window in its first rounds: that is no news)."""
    from crowd.rounds.record import examples_of

    window = int(campaign.get("memory_rounds") or 0)
    if window <= 0:
        return [], []
    first = round_["number"] - window
    earlier = [
        r
        for r in store.rounds_of(db, campaign["id"])
        if first <= r["number"] < round_["number"] and r["state"] in MEMORY_STATES
    ]
    notes = []
    if first < 1 and window > DEFAULT_MEMORY_ROUNDS:  # the default's first rounds: no news
        notes.append(
            f"The memory window is {window} earlier rounds, but round {round_['number']} has "
            f"{round_['number'] - 1} before it: the candidates train on "
            f"{len(earlier)} earlier round(s)."
        )
    out = []
    for r in earlier:
        authors = _authors(db, r)
        data, _ = training_material(db, campaign, r)
        for g in sorted(data):
            out += [(g, e, authors[e.correction_id]) for e in examples_of(data.get(g, GroupData()))]
    return out, notes


def _authors(db: Database, round_: Round) -> dict[int, str]:
    return {c["id"]: c["participant_id"] for c in store.round_corrections(db, round_["id"])}


def union_line(db: Database, round_: Round) -> Version | None:
    """The previous round's union candidate, when the union may continue from it: it trained,
    was not crowned, and the champion has not changed since (so it still builds on it)."""
    previous = next(
        (
            r
            for r in store.rounds_of(db, round_["campaign_id"])
            if r["number"] == round_["number"] - 1
        ),
        None,
    )
    if previous is None or previous["champion_id"] != round_["champion_id"]:
        return None
    union = store.candidate_of(db, previous["id"], UNION)
    if union and union["status"] == "candidate" and union["adapter_path"]:
        return union
    return None
