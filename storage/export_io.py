"""The export's files: JSONL and its Parquet twin side by side (with explicit Parquet schemas),
and the rounds and points CSVs. What goes in them is read by storage.export_snapshot; the record
shapes live in crowd.export."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from storage.export_snapshot import Scope, Snapshot

JSONL_FILES = ("sft", "dpo", "kto", "emotions", "events")
BLOCK_BYTES = 16 << 20  # JSON read per Parquet batch: bounded memory, few row groups


# --- Parquet schemas: explicit, so an empty or all-null column still has its type --------------

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
_META = [
    ("source", pa.string()),
    ("split", pa.string()),
    ("round", pa.int64()),
    ("group", pa.int64()),
    ("correction_id", pa.int64()),
]
SCHEMAS = {
    "sft": pa.schema([("messages", MESSAGES), *_META]),
    "dpo": pa.schema([("prompt", MESSAGES), ("chosen", MESSAGES), ("rejected", MESSAGES), *_META]),
    "kto": pa.schema(
        [("prompt", MESSAGES), ("completion", MESSAGES), ("label", pa.bool_()), *_META]
    ),
    "emotions": pa.schema(
        [("text", pa.string()), ("label", pa.string()), ("annotator", pa.string()), *_META]
    ),
    "events": pa.schema(
        [(name, pa.int64()) for name in ("correction_id",)]
        + [("kind", pa.string())]
        + [(name, pa.int64()) for name in ("campaign_id", "round", "round_id", "group")]
        + [(name, pa.string()) for name in ("participant", "participant_name", "hf_username")]
        + [("participant_banned", pa.bool_())]
        + [(name, pa.int64()) for name in ("model_version_id", "message_id", "other_message_id")]
        + [("prompt", MESSAGES)]
        + [(n, pa.string()) for n in ("original", "shown", "other_reply", "rewrite")]
        + [(n, pa.string()) for n in ("choice", "emotion")]
        + [("rating", pa.int64()), ("split", pa.string())]
        + [("hidden", pa.bool_()), ("hidden_at", pa.string())]
        + [("undone", pa.bool_()), ("undone_at", pa.string()), ("created_at", pa.string())]
        + [("participant_hidden", pa.bool_()), ("replaced_at", pa.string())]
        + [("endorsements", pa.int64()), ("rejections", pa.int64()), ("used", pa.bool_())]
        + [("status", pa.string())]
    ),
}


# One encoder for every line: json.dumps with options would build a new one per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


class Sinks:
    """One JSONL file per output, written row by row; each gets its Parquet twin on close,
    converted by Arrow's streaming JSON reader (C++, bounded memory) against an explicit schema."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._jsonl = {n: open(folder / f"{n}.jsonl", "w", encoding="utf-8") for n in JSONL_FILES}
        self._counts: Counter[str] = Counter()

    def add(self, name: str, record: dict) -> None:
        self._jsonl[name].write(_ENCODE(record) + "\n")
        self._counts[name] += 1

    def counts(self) -> dict[str, int]:
        return {name: self._counts[name] for name in JSONL_FILES}

    def __enter__(self) -> Sinks:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._jsonl.values():
            handle.close()
        if exc[0] is None:
            for name in JSONL_FILES:
                to_parquet(self._folder / f"{name}.jsonl", SCHEMAS[name], self._counts[name])


def to_parquet(jsonl: Path, schema: pa.Schema, rows: int) -> None:
    """Write `jsonl`'s Parquet twin beside it, streaming in blocks of BLOCK_BYTES."""
    target = jsonl.with_suffix(".parquet")
    if rows == 0:  # Arrow's reader refuses an empty file; an empty table keeps the schema
        pq.write_table(schema.empty_table(), target)
        return
    reader = pa_json.open_json(
        jsonl,
        read_options=pa_json.ReadOptions(block_size=BLOCK_BYTES),
        parse_options=pa_json.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="error"
        ),
    )
    with pq.ParquetWriter(target, schema) as writer:
        for batch in reader:
            writer.write_batch(batch.select(schema.names))


ROUND_COLUMNS = [
    "round",
    "round_id",
    "state",
    "group",
    "role",
    "model_version_id",
    "status",
    "metric",
    "value",
    "loss",
    "n_items",
    "winner",
    "corrections",
]


def write_rounds_csv(
    snap: Snapshot, scope: Scope, per_group: Counter[tuple[int, int]], path: Path
) -> int:
    """One row per round and evaluated model (champion, then groups); groups that sat out a
    round (no evaluation) still get a row with their correction count. Returns the row count."""
    rows = snap.evaluations(scope)
    for row in rows:
        row["role"] = "champion" if row["group"] is None else "candidate"
        row["corrections"] = per_group.get((row["round"], row["group"]), "")
    evaluated = {(row["round"], row["group"]) for row in rows}
    states = snap.round_states()
    numbers = {number: rid for rid, number in scope.round_ids.items()}
    for (number, group), n in per_group.items():
        if (number, group) not in evaluated:
            rid = numbers[number]
            rows.append(
                {
                    "round": number,
                    "round_id": rid,
                    "state": states[rid],
                    "group": group,
                    "role": "group",
                    "winner": 0,
                    "corrections": n,
                }
            )
    rows.sort(key=lambda r: (r["round"], -1 if r["group"] is None else r["group"]))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ROUND_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


POINT_COLUMNS = [
    "point_id",
    "round",
    "participant",
    "participant_name",
    "group",
    "amount",
    "rule",
    "reason",
    "created_at",
]


def write_points_csv(snap: Snapshot, scope: Scope, path: Path) -> int:
    """The points ledger in scope, participants pseudonymised; returns the row count."""
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, POINT_COLUMNS)
        writer.writeheader()
        for row in snap.points(scope):
            writer.writerow(
                {
                    "point_id": row["id"],
                    "round": row["round"],
                    "participant": snap.pseudonym(row),
                    "participant_name": row["display_name"] if row["share_identity"] else "",
                    "group": "" if row["group_index"] is None else row["group_index"],
                    "amount": row["amount"],
                    "rule": row["rule"],
                    "reason": row["reason"],
                    "created_at": row["created_at"],
                }
            )
            n += 1
    return n
