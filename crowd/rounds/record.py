"""Closing a round into its bundle and its record, in one transaction.

What trains and judges is decided here, once, by `training_material` and `judging_material`
(crowd.rounds.material, with crowd.trust's rules): the bundle carries the examples to the job, and
the record (storage.records) keeps which corrections trained, were set aside and judged, with
the round's review verdicts as they stood. Reviews that arrive later change neither: points,
the export's `used` flag and the model card read the record.
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from sqlite_utils import Database

from crowd.config import TrainingSettings
from crowd.evaluation import split_heldout
from crowd.rounds import candidates as plans
from crowd.rounds.awards import verdicts_of
from crowd.rounds.bundle import Bundle, Example, JudgingSettings, write_bundle
from crowd.rounds.material import GroupData, heldout_items, judging_material, training_material
from crowd.rounds.state import advance
from crowd.scoring.scorers import target_vector
from crowd.training.data import PairExample
from storage import before_after, records
from storage import rounds as store
from storage.db import database_id, transaction
from storage.rows import Campaign, Correction, Round, must

log = logging.getLogger(__name__)

BUNDLES = "bundles"  # under the data dir
MIN_EVAL_PROMPTS = 4  # the emotion task's judging prompts, topped up from the campaign's
DEFAULT_PROMPT = [{"role": "user", "content": "Write a reddit comment."}]
SHOWCASE_PER_PERSON = 3  # prompts per volunteer answered by the old and new champion
SHOWCASE_PEOPLE = 64  # a large crowd: the most recent this many (bounds the job's extra time)


def draw_heldout(db: Database, campaign: Campaign, round_: Round) -> None:
    """Mark a fixed share of each group's live corrections held out, the rest train. The same
    draw if redone (seeded by the round)."""
    by_group: dict[int, list[int]] = defaultdict(list)
    for correction in store.round_corrections(db, round_["id"]):
        by_group[correction["group_index"]].append(correction["id"])
    rng = random.Random(f"heldout-{round_['id']}")
    heldout = split_heldout(by_group, campaign["heldout_share"], rng)
    store.set_split(db, [i for ids in by_group.values() for i in ids], "train")
    store.set_split(db, heldout, "heldout")


def close_into_bundle(
    db_path: Path,
    data_dir: Path,
    round_id: int,
    settings: tuple[str, TrainingSettings, JudgingSettings],
    scorer: object | None,
    now: str,
) -> Bundle | None:
    """Draw the held-out share of a 'closing' round, write its bundle and record, and move it to
    'training', in one transaction. `settings`: (base model, training, judging); `scorer`: the
    campaign's emotion scorer (emotion task). None when the round was not closing any more."""
    base_model, training, judging = settings
    with transaction(db_path) as db:
        round_ = store.get_round(db, round_id)
        if round_ is None or round_["state"] != "closing":
            return None
        campaign = must(store.get_campaign(db, round_["campaign_id"]), "the round's campaign")
        draw_heldout(db, campaign, round_)
        data, _ = training_material(db, campaign, round_)
        heldout = judging_material(db, campaign, round_)
        material = (data, heldout)
        bundle, plan = _bundle(
            db, (db_path, data_dir), campaign, round_, material, (base_model, training, judging)
        )
        if campaign["task"] == "emotion":
            bundle = _with_target(db, bundle, campaign, scorer)
        champion = must(store.get_version(db, round_["champion_id"]), "the round's champion")
        adapter = data_dir / champion["adapter_path"] if champion["adapter_path"] else None
        starts = {name: data_dir / path for name, path in plan.starts.items()}
        written = write_bundle(bundle, data_dir / BUNDLES, adapter, scorer, starts)
        note(db, round_, plan.notes)
        rows = _record_rows(db, round_, material, written)
        path = str(written.folder.relative_to(data_dir))
        verdicts = verdicts_of(db, campaign, round_)
        records.add_record(
            db, round_["id"], written.hash, path, verdicts, recorded_settings(written), rows, now
        )
        advance(db, round_["id"], "training")
    return written


def note(db: Database, round_: Round, notes: list[str]) -> None:
    """Say in the round (shown on the organizer page) and the log what could not be built."""
    for text in notes:
        log.warning("round %s: %s", round_["id"], text)
    if notes:
        store.add_round_notes(db, round_["id"], notes)


def recorded_settings(bundle: Bundle) -> dict:
    """What trained and judged the round, beside its record: the model card reads it, and
    `memory` keeps which earlier rounds' corrections each candidate trained on again."""
    return {
        "candidates": [c.name for c in bundle.candidates],
        "memory": {n: [e.correction_id for e in ex] for n, ex in sorted(bundle.memory.items())},
        "base_model": bundle.base_model,
        "mode": bundle.mode,
        "seed": bundle.seed,
        "training": {
            **asdict(bundle.training),
            "target_modules": list(bundle.training.target_modules),
        },
        "judging": asdict(bundle.judging),
    }


def _bundle(
    db: Database,
    paths: tuple[Path, Path],
    campaign: Campaign,
    round_: Round,
    material: tuple[dict[int, GroupData], list[Correction]],
    settings: tuple[str, TrainingSettings, JudgingSettings],
) -> tuple[Bundle, plans.Plan]:
    """The bundle's content from the round's training material and judging corrections, and
    the plan of its candidates (crowd.rounds.candidates)."""
    (data, heldout), (base_model, training, judging) = material, settings
    db_path, data_dir = paths
    groups = {g: examples_of(data.get(g, GroupData())) for g in range(campaign["n_groups"])}
    sat_out = {g: why for g in groups if (why := _sits_out(campaign, data.get(g, GroupData())))}
    prompts, pairs = _judging_set(db, campaign, heldout)
    plan = plans.plan(db, campaign, round_, groups, sat_out, data_dir)
    bundle = Bundle(
        campaign={
            "id": campaign["id"],
            "name": campaign["name"],
            "database_id": database_id(db_path),
        },
        round={"id": round_["id"], "number": round_["number"]},
        base_model=base_model,
        task=campaign["task"],
        target_emotion=campaign["target_emotion"],
        mode=campaign["training_mode"],
        seed=training.seed,
        training=training,
        judging=judging.for_round(
            round_["number"], float(campaign["win_margin"]), campaign.get("judge", "fixed")
        ),
        champion_version=round_["champion_id"],
        groups=groups,
        candidates=plan.candidates,
        sat_out=sat_out,
        prompts=prompts,
        pairs=pairs,
        showcase=_showcase(db, round_["id"]),
        memory=plan.memory,
    )
    return bundle, plan


def _sits_out(campaign: Campaign, data: GroupData) -> str | None:
    """Why a group does not train this round, or None."""
    if data.corrections < campaign["min_corrections"]:
        return f"{data.corrections} corrections, fewer than {campaign['min_corrections']}"
    usable = data.pairs if campaign["training_mode"] == "dpo" else data.sft
    if not usable:
        return f"nothing its corrections teach in {campaign['training_mode']} mode"
    return None


def examples_of(data: GroupData) -> list[Example]:
    """The group's examples, one per correction that teaches a reply or a preference."""
    sft = dict(zip(data.sft_ids, data.sft))
    pairs = dict(zip(data.pair_ids, data.pairs))
    return [
        Example(cid, list(sft[cid].messages) if cid in sft else None, pairs.get(cid))
        for cid in data.ids
        if cid in sft or cid in pairs
    ]


def _judging_set(
    db: Database, campaign: Campaign, heldout: list[Correction]
) -> tuple[list[list[dict]], list[PairExample]]:
    """The held-out prompts (emotion task, topped up from the campaign's prompts) or pairs
    (preference task, with the organizer's reference pairs)."""
    prompts, pairs = heldout_items(heldout, campaign["task"], campaign["target_emotion"])
    if campaign["task"] == "preference":
        for r in store.reference_texts(db, campaign["id"], "pair"):
            prompt = json.loads(r["prompt"] or "[]") or DEFAULT_PROMPT
            pairs.append(PairExample(prompt, r["chosen"], r["rejected"]))
        return [], pairs
    for text in json.loads(campaign["prompts"] or "[]"):
        if len(prompts) >= MIN_EVAL_PROMPTS:
            break
        prompts.append([{"role": "user", "content": text}])
    return prompts or [DEFAULT_PROMPT], []


def _with_target(db: Database, bundle: Bundle, campaign: Campaign, scorer) -> Bundle:
    return replace(bundle, target=[float(v) for v in emotion_target(db, campaign, scorer)])


def emotion_target(db: Database, campaign: Campaign, scorer) -> np.ndarray:
    """The emotion target a round closed now is judged against: the mean scored vector of the
    organizer's reference texts labelled for this target (or unlabelled; texts labelled for an
    earlier target do not shape it), else the target's one-hot vector."""
    texts = [
        r["text"]
        for r in store.reference_texts(db, campaign["id"], "emotion")
        if r["text"] and r["label"] in (None, campaign["target_emotion"])
    ]
    target = campaign["target_emotion"]
    if target is None:
        raise ValueError(f"campaign {campaign['id']} judges an emotion but names none")
    return target_vector(scorer, texts, target)


def _showcase(db: Database, round_id: int) -> list[dict]:
    prompts = before_after.prompts_of_round(db, round_id, SHOWCASE_PER_PERSON)
    people = list(prompts)[-SHOWCASE_PEOPLE:]
    return [{"participant_id": p, "prompt": text} for p in people for text in prompts[p]]


def _record_rows(
    db: Database,
    round_: Round,
    material: tuple[dict[int, GroupData], list[Correction]],
    bundle: Bundle,
) -> list[dict]:
    """The record: every train-split correction as trained or set aside, and the judging set."""
    data, heldout = material
    taught = {
        e.correction_id
        for examples in bundle.groups.values()
        for e in examples
        if (e.pair is not None if bundle.mode == "dpo" else e.sft is not None)
    }
    admitted = {cid for d in data.values() for cid in d.ids}
    rows = [
        {
            "correction_id": c["id"],
            "participant_id": c["participant_id"],
            "group_index": c["group_index"],
            "role": "train" if c["id"] in admitted else "set_aside",
            "taught": int(c["id"] in taught),
        }
        for c in store.round_corrections(db, round_["id"])
        if c["split"] == "train"
    ]
    rows += [
        {
            "correction_id": c["id"],
            "participant_id": c["participant_id"],
            "group_index": c["group_index"],
            "role": "judge",
            "taught": 0,
        }
        for c in heldout
    ]
    return rows
