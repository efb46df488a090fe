"""Export the labelled data: TRL-ready JSONL and Parquet, raw events, rounds, points and a card.

One read transaction gives a consistent snapshot while the app keeps writing; corrections are
streamed row by row, each turned into the records it yields for every file. Everything is written
to a hidden folder beside the target and renamed into place at the end, so bad input or a crash
leaves nothing half-written.

Privacy: participants appear under a pseudonym, a salted SHA-256 of their id (the salt is random
per export and never written), so pseudonyms are stable within one export and unlinkable across
exports. Names and Hugging Face usernames appear only for people who opted in (share_identity).
Moderated-out data (hidden corrections, banned or hidden participants) is left out; when asked, it
appears in events.jsonl (flagged) and points.csv, never in a training file.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict, Unpack

from sqlite_utils import Database

from crowd.assess import Assessment, assess
from crowd.lessons import Lesson, MalformedCorrection, lesson
from storage.card import render_card
from storage.export_io import JSONL_FILES, Sinks, write_points_csv, write_rounds_csv
from storage.export_snapshot import ExportError, Scope, Snapshot, open_snapshot
from storage.rows import ExportedCorrection

__all__ = ["ExportError", "export_dataset", "export_zip"]

Message = dict[str, str]


def export_dataset(
    db_path: Path | str,
    out_dir: Path | str,
    *,
    campaign: int | None = None,
    rounds: list[int] | None = None,
    groups: list[int] | None = None,
    include_hidden: bool = False,
    include_banned: bool = False,
    salt: str | None = None,
    now: datetime | None = None,
) -> dict[str, int]:
    """Write the export of one campaign (default: the latest) into `out_dir`; return row counts.

    `rounds` are round numbers within the campaign, `groups` 0-based group indices. `out_dir`
    must be new, empty, or a previous export (which is replaced). Raises ExportError, having
    written nothing, on a missing or unmigrated database, an unknown round or group.
    """
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    with open_snapshot(Path(db_path), salt) as snap:
        scope = snap.scope(campaign, rounds, groups, include_hidden, include_banned)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
        try:
            counts, per_group = _write_corrections(snap, scope, staging)
            counts["rounds"] = write_rounds_csv(snap, scope, per_group, staging / "rounds.csv")
            counts["points"] = write_points_csv(snap, scope, staging / "points.csv")
            summary = snap.summary(scope, counts, now or datetime.now(UTC))
            (staging / "README.md").write_text(render_card(summary), encoding="utf-8")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    _install(staging, out_dir)
    return counts


class ExportOptions(TypedDict, total=False):
    """`export_dataset`'s options, for the callers that pass them on (mypy holds the two to
    each other at the call in `export_zip`)."""

    campaign: int | None
    rounds: list[int] | None
    groups: list[int] | None
    include_hidden: bool
    include_banned: bool
    salt: str | None
    now: datetime | None


def export_zip(db_path: Path | str, zip_path: Path | str, **options: Unpack[ExportOptions]) -> Path:
    """The same export as one zip file (the organizer's download button); returns its path."""
    zip_path = Path(zip_path)
    with tempfile.TemporaryDirectory(prefix="crowd-export-") as tmp:
        folder = Path(tmp) / "export"
        export_dataset(db_path, folder, **options)
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        partial = zip_path.with_name(zip_path.name + ".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(folder.iterdir()):
                archive.write(file, file.name)
        partial.replace(zip_path)
    return zip_path


# --- corrections -> records ------------------------------------------------------------------


def _write_corrections(
    snap: Snapshot, scope: Scope, folder: Path
) -> tuple[dict[str, int], Counter[tuple[int, int]]]:
    """Stream every correction in scope into the five JSONL/Parquet pairs, in one pass.

    Returns the row count of each file and the number of used corrections per (round, group).
    """
    per_group: Counter[tuple[int, int]] = Counter()
    trust = assess(Database(snap.conn), scope.campaign)
    used = _used_ids(snap, scope, trust)
    with Sinks(folder) as sinks:
        task, target = scope.campaign["task"], scope.campaign["target_emotion"]
        for row in snap.corrections(scope):
            try:
                taught = lesson(row, task, target)
            except MalformedCorrection as exc:
                raise ExportError(str(exc)) from None
            status = trust.status(row["id"])
            sinks.add("events", _event(row, taught.prompt, snap, row["id"] in used, status))
            if row["id"] not in used:
                continue  # withdrawn, replaced, moderated out, rejected or over the cap
            per_group[(row["round"], row["group_index"])] += 1
            for name, record in _training_records(row, taught, snap.pseudonym(row)):
                sinks.add(name, record)
        counts = sinks.counts()
    return counts, per_group


def _used_ids(snap: Snapshot, scope: Scope, trust: Assessment) -> set[int]:
    """Ids of the corrections the training files hold: live (storage.queries.LIVE), and used. A
    round that has been closed into its bundle says what it used in its record (what trained,
    and what judged it or a later round: storage.records), read as written; a round still open
    (or closed before records were kept) is read as it would use them (`crowd.assess`): the
    train split that trains, the held-out split that judges."""
    recorded, recorded_used = snap.recorded(scope)
    by_round: dict[int, list[ExportedCorrection]] = {}
    for row in snap.corrections(scope):
        if row["live"]:
            by_round.setdefault(row["round_id"], []).append(row)
    used: set[int] = set()
    for round_id, rows in by_round.items():
        if round_id in recorded:
            used |= {r["id"] for r in rows if r["id"] in recorded_used}
            continue
        used |= {c["id"] for c in trust.training(rows)}
        used |= {c["id"] for c in trust.judging([r for r in rows if r["split"] == "heldout"])}
    return used


def _assistant(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


def _training_records(
    row: ExportedCorrection, taught: Lesson, annotator: str
) -> Iterator[tuple[str, dict]]:
    """What one usable correction contributes to sft, dpo, kto and emotions (file, record):
    exactly its lesson (crowd.lessons), the same one a round trains on."""
    meta = {
        "source": row["kind"],
        "split": row["split"],
        "round": row["round"],
        "group": row["group_index"],
        "correction_id": row["id"],
    }
    prompt = taught.prompt
    if taught.sft_target is not None:
        yield "sft", {"messages": taught.sft_messages(), **meta}
    if taught.pair is not None:
        chosen, rejected = taught.pair
        yield (
            "dpo",
            {
                "prompt": prompt,
                "chosen": _assistant(chosen),
                "rejected": _assistant(rejected),
                **meta,
            },
        )
    for completion, label in taught.kto:
        yield (
            "kto",
            {"prompt": prompt, "completion": _assistant(completion), "label": label, **meta},
        )
    if taught.emotion is not None:
        text, emotion = taught.emotion
        yield "emotions", {"text": text, "label": emotion, "annotator": annotator, **meta}


def _event(
    row: ExportedCorrection, prompt: list[Message], snap: Snapshot, used: bool, status: str
) -> dict:
    """The raw correction with its provenance, its trust status (`crowd.trust.STATUSES`) and
    whether it is used; identity fields only for those who opted in."""
    shared = bool(row["share_identity"])
    return {
        "correction_id": row["id"],
        "kind": row["kind"],
        "campaign_id": row["campaign_id"],
        "round": row["round"],
        "round_id": row["round_id"],
        "group": row["group_index"],
        "participant": snap.pseudonym(row),
        "participant_name": row["display_name"] if shared else None,
        "hf_username": row["hf_username"] if shared else None,
        "participant_banned": row["banned_at"] is not None,
        "model_version_id": row["model_version_id"],
        "message_id": row["message_id"],
        "other_message_id": row["other_message_id"],
        "prompt": prompt,
        "original": row["original"],
        "shown": row["shown"],
        "other_reply": row["other_reply"],
        "rewrite": row["rewrite"],
        "choice": row["choice"],
        "emotion": row["emotion"],
        "rating": row["rating"],
        "split": row["split"],
        "hidden": row["hidden_at"] is not None,
        "hidden_at": row["hidden_at"],
        "undone": row["undone_at"] is not None,
        "undone_at": row["undone_at"],
        "created_at": row["created_at"],
        "participant_hidden": row["person_hidden_at"] is not None,
        "replaced_at": row["replaced_at"],
        "endorsements": row["endorsements"],
        "rejections": row["rejections"],
        "used": used,
        "status": status,
    }


# --- the output folder -----------------------------------------------------------------------

EXPORT_NAMES = frozenset(
    [f"{name}.{ext}" for name in JSONL_FILES for ext in ("jsonl", "parquet")]
    + ["rounds.csv", "points.csv", "README.md"]
)


def _check_out_dir(out_dir: Path) -> None:
    """Refuse a target that is a file or a folder holding anything but a previous export."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir():
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in EXPORT_NAMES)
        if foreign:
            raise ExportError(
                f"{out_dir} holds files that are not part of an export ({', '.join(foreign[:3])});"
                " choose a new or empty folder"
            )


def _install(staging: Path, out_dir: Path) -> None:
    """Swap the finished export into place; a previous export is removed only afterwards."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{staging.name.rsplit('-', 1)[-1]}")
        out_dir.rename(old)
    staging.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
