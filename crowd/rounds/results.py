"""What a round job leaves in its OUT folder, and the check the worker makes before it crowns.

    OUT/bundle.txt            the hash of the bundle OUT belongs to (another bundle's OUT is refused)
    OUT/progress.json         the job's latest progress (stage, step, eta...), relayed to the jobs table
    OUT/candidates/<name>/    each trained candidate's LoRA adapter
    OUT/candidates/<name>.json   how its training ended: trained or failed (with the error)
    OUT/results.json          written last: every score with its per-sample detail, the crowning
                              decision, each contribution's vector or margin, the showcase replies

`read_results` trusts nothing: the results must name the bundle, cover exactly its candidates,
hold every trained adapter with the hashes they were written with, score the champion and every
trained candidate on the same items, value every contribution the bundle has, and reach the
crowning decision the worker reaches itself (`decide`). Anything else is ResultsMismatch, and
nothing is crowned from it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crowd.metrics import Score
from crowd.rounds.bundle import ADAPTER_FILES, Bundle, JudgingSettings, file_hash
from crowd.rounds.judge import looks, most_replies, sequential_decision

FORMAT = "crowd-round-results/1"
RESULTS = "results.json"
PROGRESS = "progress.json"
OWNER = "bundle.txt"
CANDIDATES = "candidates"
CHAMPION = "champion"  # the champion's key among the scores


class ResultsMismatch(ValueError):
    """OUT does not hold the complete results of this bundle; the message says what differs.
    `out`: the folder that was checked."""

    def __init__(self, message: str, out: Path | None = None):
        super().__init__(message)
        self.out = out


@dataclass(frozen=True)
class Results:
    bundle_hash: str
    trained: dict[str, dict]  # candidate name -> {steps, loss, seconds}
    failed: dict[str, str]  # candidate name -> why its training failed
    scores: dict[str, Score]  # 'champion' and each trained candidate
    best: str | None  # the best contender, crowned or not
    improved: bool
    contributions: dict[int, dict]  # correction id -> {vector: [28] | None, margin: float | None}
    showcase: list[dict]  # participant_id, prompt, before, after, before_distance, after_distance
    root: Path

    def adapter_dir(self, name: str) -> Path:
        return self.root / CANDIDATES / name


def decide(scores: dict[str, Score], names: list[str], judging: JudgingSettings) -> tuple:
    """(best, improved): the best of the candidates `names` that did not collapse, and whether
    it beats the champion by the win margin plus `crown_z` standard errors. The one crowning
    rule: the job applies it, and the worker applies it again to the job's scores. An emotion
    round judged in looks (`judge` 'sequential') is decided by that judge's rule
    (crowd.rounds.judge.sequential_decision)."""
    if judging.judge == "sequential" and scores[CHAMPION].metric == "emotion_l2":
        return sequential_decision(scores, names, CHAMPION, judging)
    contenders = [n for n in names if n in scores and not scores[n].collapsed]
    best = max(contenders, key=lambda n: scores[n].oriented, default=None)
    improved = best is not None and scores[best].better_than(
        scores[CHAMPION], judging.win_margin, judging.crown_z
    )
    return best, bool(improved)


# --- writing (the job) -----------------------------------------------------------------------


def write_json(path: Path, value: Any) -> None:
    """Write `value` as JSON atomically: a reader sees the old file or the new one, whole."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    os.replace(partial, path)


def score_json(score: Score) -> dict:
    return asdict(score)


def write_results(out: Path, bundle: Bundle, **fields: Any) -> None:
    """results.json, last: every field of `Results` but the root, with each trained adapter's
    file hashes."""
    hashes = {
        name: {f: file_hash(out / CANDIDATES / name / f) for f in ADAPTER_FILES}
        for name in fields["trained"]
    }
    scores = {name: score_json(s) for name, s in fields["scores"].items()}
    contributions = {str(cid): value for cid, value in fields["contributions"].items()}
    record = {**fields, "scores": scores, "contributions": contributions, "hashes": hashes}
    write_json(out / RESULTS, {"format": FORMAT, "bundle": bundle.hash, **record})


# --- reading (the worker) --------------------------------------------------------------------


def read_results(out: Path, bundle: Bundle) -> Results:
    """The results in `out` for `bundle`, checked against it; ResultsMismatch says what is off."""
    try:
        raw = json.loads((out / RESULTS).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsMismatch(f"{out} holds no {RESULTS}: the job did not finish", out) from None
    except ValueError as exc:
        raise ResultsMismatch(f"{out / RESULTS} is not JSON: {exc}", out) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ResultsMismatch(f"{out / RESULTS} is not a {FORMAT} file", out)
    if raw.get("bundle") != bundle.hash:
        raise ResultsMismatch(
            f"the results in {out} are for bundle {str(raw.get('bundle'))[:12]}, "
            f"not for this round's bundle {bundle.hash[:12]}",
            out,
        )
    try:
        results = _parse(raw, out)
    except (KeyError, TypeError, ValueError) as exc:
        raise ResultsMismatch(f"{out / RESULTS} is malformed: {exc!r}", out) from None
    try:
        _check(results, raw["hashes"], bundle)
    except ResultsMismatch as exc:
        raise ResultsMismatch(str(exc), out) from None
    return results


def _parse(raw: dict, out: Path) -> Results:
    return Results(
        bundle_hash=raw["bundle"],
        trained=dict(raw["trained"]),
        failed=dict(raw["failed"]),
        scores={name: Score(**s) for name, s in raw["scores"].items()},
        best=raw["best"],
        improved=bool(raw["improved"]),
        contributions={int(cid): v for cid, v in raw["contributions"].items()},
        showcase=list(raw["showcase"]),
        root=out,
    )


def _same_items(scores: dict[str, Score], judging: JudgingSettings) -> bool:
    """Every model judged on the same items; judged in looks, each on one of the looks'
    (crowd.rounds.judge.looks) or the extension's (S to 2S), the champion on the most."""
    counts = {s.n_items for s in scores.values()}
    if judging.judge != "sequential" or scores[CHAMPION].metric != "emotion_l2":
        return len(counts) == 1
    extended = range(judging.samples, most_replies(judging.samples) + 1)
    allowed = {*looks(judging.samples), *extended}
    return counts <= allowed and scores[CHAMPION].n_items == max(counts)


def _check(results: Results, hashes: dict, bundle: Bundle) -> None:
    names = [c.name for c in bundle.candidates]
    ended = set(results.trained) | set(results.failed)
    if ended != set(names) or set(results.trained) & set(results.failed):
        raise ResultsMismatch(
            f"the results cover candidates {sorted(ended)}, the bundle has {sorted(names)}"
        )
    for name in results.trained:
        for file in ADAPTER_FILES:
            path = results.adapter_dir(name) / file
            if not path.is_file() or file_hash(path) != hashes.get(name, {}).get(file):
                raise ResultsMismatch(
                    f"candidate {name}'s adapter file {file} is missing or changed"
                )
    judged = {CHAMPION, *results.trained}
    if set(results.scores) != judged:
        raise ResultsMismatch(f"scores for {sorted(results.scores)}, expected {sorted(judged)}")
    if not _same_items(results.scores, bundle.judging):
        raise ResultsMismatch("the models were not judged on the same number of items")
    wanted = {cid for _, cid, _ in bundle.contributions()}
    if set(results.contributions) != wanted:
        raise ResultsMismatch("the contributions valued are not the bundle's")
    if (results.best, results.improved) != decide(results.scores, names, bundle.judging):
        raise ResultsMismatch("the job's crowning decision does not follow from its scores")
    asked = {(s["participant_id"], s["prompt"]) for s in bundle.showcase}
    if any((r["participant_id"], r["prompt"]) not in asked for r in results.showcase):
        raise ResultsMismatch("the showcase answers prompts the bundle did not ask")
