"""Benchmark: export 100,000 corrections (target: under 10 s on a 2-core machine).

Builds a migrated database with a campaign of N corrections (every kind, realistic text lengths),
then times the full export against a baseline run in the same process, interleaved: a bare dump
of the corrections table to one JSONL file, the least any export must do. Prints one line per
repetition, then one JSON object: export_s (median wall), export_cpu_s (median CPU time of this process,
less sensitive to other load), baseline_s (median), ratio, corrections, rows per file.

    .venv/bin/python bench/export.py [--corrections 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from crowd.export import export_dataset  # noqa: E402
from storage.db import migrate  # noqa: E402
from storage.vocabulary import CHOICES, KINDS, RATINGS  # noqa: E402

T0 = "2026-11-02T10:00:00+00:00"
WORDS = "the a day joy bright happy warm sun friends music laugh glad kind sweet we you".split()


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choices(WORDS, k=n_words)).capitalize() + "."


def _correction(i: int, rng: random.Random, n_people: int, n_messages: int) -> tuple:
    """One correction row; the prompt is a two-turn chat, the reply 20-40 words."""
    kind = KINDS[i % len(KINDS)]
    prompt = json.dumps(
        [
            {"role": "user", "content": _text(rng, 12)},
            {"role": "assistant", "content": _text(rng, 25)},
            {"role": "user", "content": _text(rng, 10)},
        ]
    )
    message = 2 * rng.randrange(n_messages // 2) + 1
    return (
        kind,
        f"p{rng.randrange(n_people)}",
        1 + i % 5,
        i % 3,
        message,
        message + 1 if kind == "choice" else None,
        1,
        prompt,
        _text(rng, rng.randint(20, 40)),
        _text(rng, 30) if kind == "rewrite" else None,
        rng.choice(CHOICES) if kind == "choice" else None,
        "joy" if kind == "emotion" else None,
        rng.choice(RATINGS) if kind == "rating" else None,
        "heldout" if i % 5 == 0 else "train",
        T0 if i % 50 == 0 else None,
        T0,
    )


def build(db_path: Path, n: int, seed: int = 0) -> None:
    """A migrated database with one campaign, 5 rounds, 3 groups, 500 people, n corrections."""
    rng = random.Random(seed)
    migrate(db_path)
    conn = sqlite3.connect(db_path)
    conn.execute(
        "INSERT INTO campaigns (id, name, task, target_emotion, n_groups, created_at)"
        " VALUES (1, 'bench', 'emotion', 'joy', 3, ?)",
        [T0],
    )
    conn.execute(
        "INSERT INTO model_versions (id, campaign_id, status, created_at)"
        " VALUES (1, 1, 'champion', ?)",
        [T0],
    )
    conn.executemany(
        "INSERT INTO rounds (id, campaign_id, number, champion_id, opened_at)"
        " VALUES (?, 1, ?, 1, ?)",
        [(r, r, T0) for r in range(1, 6)],
    )
    conn.executemany(
        "INSERT INTO participants (id, display_name, consented_at, created_at) VALUES (?, ?, ?, ?)",
        [(f"p{k}", f"P {k}", T0, T0) for k in range(500)],
    )
    conn.execute(
        "INSERT INTO conversations (id, participant_id, round_id, group_index,"
        " created_at) VALUES (1, 'p0', 1, 0, ?)",
        [T0],
    )
    n_messages = 2000
    conn.executemany(
        "INSERT INTO messages (id, conversation_id, position, role, content, created_at)"
        " VALUES (?, 1, ?, 'assistant', ?, ?)",
        [(m, m, _text(rng, 30), T0) for m in range(1, n_messages + 1)],
    )
    conn.executemany(
        "INSERT INTO corrections (kind, participant_id, round_id, group_index, message_id,"
        " other_message_id, model_version_id, prompt, original, rewrite, choice, emotion,"
        " rating, split, undone_at, created_at) VALUES (" + ",".join("?" * 16) + ")",
        (_correction(i, rng, 500, n_messages) for i in range(n)),
    )
    conn.commit()
    conn.close()


def baseline(db_path: Path, out: Path) -> None:
    """The floor: every correction row as one JSON line, nothing else."""
    conn = sqlite3.connect(db_path)
    cursor = conn.execute("SELECT * FROM corrections ORDER BY id")
    names = [c[0] for c in cursor.description]
    with open(out, "w", encoding="utf-8") as handle:
        for values in cursor:
            handle.write(json.dumps(dict(zip(names, values)), ensure_ascii=False) + "\n")
    conn.close()


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corrections", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "crowd.db"
        build_s = timed(build, db, args.corrections)
        print(f"built {args.corrections} corrections in {build_s:.1f} s")
        ours, ours_cpu, base, counts = [], [], [], {}
        for rep in range(args.repeats):  # interleaved, so both see the same machine load
            start, start_cpu = time.perf_counter(), time.process_time()
            counts = export_dataset(db, Path(tmp) / "export", salt="bench")
            ours.append(time.perf_counter() - start)
            ours_cpu.append(time.process_time() - start_cpu)
            base.append(timed(baseline, db, Path(tmp) / "baseline.jsonl"))
            print(
                f"repeat {rep}: export {ours[-1]:.2f} s (cpu {ours_cpu[-1]:.2f} s),"
                f" baseline {base[-1]:.2f} s"
            )
    export_s, baseline_s = statistics.median(ours), statistics.median(base)
    print(
        json.dumps(
            {
                "export_s": round(export_s, 3),
                "export_cpu_s": round(statistics.median(ours_cpu), 3),
                "baseline_s": round(baseline_s, 3),
                "ratio": round(export_s / baseline_s, 2),
                "corrections": args.corrections,
                "rows": counts,
            }
        )
    )


if __name__ == "__main__":
    main()
