"""Crowning a round from its job's checked results: the candidates' versions and adapters, every
score, the winner, the points and the before/after replies, and the round moved to 'done', in
one transaction. Points come from the round's record (storage.records: who contributed what,
and the review verdicts as they stood when the bundle was written) and the job's values for
each contribution, never from the live database."""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
from sqlite_utils import Database

from crowd.groups import group_name
from crowd.points import ContributionItem, RoundOutcome
from crowd.rounds.awards import ledger_rows
from crowd.rounds.bundle import Bundle
from crowd.rounds.candidates import union_line
from crowd.rounds.record import note
from crowd.rounds.results import CHAMPION, Results
from crowd.rounds.state import advance
from storage import before_after, records
from storage import rounds as store
from storage.db import transaction
from storage.rows import Campaign, Round, Version, must


def adapter_path(campaign: Campaign, round_: Round, name: str) -> Path:
    """Where a candidate's adapter lives in the data dir (relative), as the app serves it."""
    return Path("adapters") / f"c{campaign['id']}" / f"r{round_['number']}" / name


def install_adapters(data_dir: Path, campaign: Campaign, round_: Round, results: Results) -> None:
    """Copy each trained candidate's adapter from OUT into the data dir (before the crowning
    commits: a crash in between leaves only files a retry writes again)."""
    for name in results.trained:
        target = data_dir / adapter_path(campaign, round_, name)
        partial = target.with_name(f".{target.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(results.adapter_dir(name), partial)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)


def crown(
    db_path: Path, campaign: Campaign, round_: Round, bundle: Bundle, results: Results, now: str
) -> Version | None:
    """Write the round's outcome and finish it; returns the crowned version (None: the champion
    stays). Does nothing if the round is no longer being trained or judged."""
    with transaction(db_path) as db:
        current = must(store.get_round(db, round_["id"]), f"round {round_['id']}")
        if current["state"] not in ("training", "evaluating"):
            return None
        versions = _versions(db, campaign, round_, bundle, results, now)
        champion = must(store.get_version(db, round_["champion_id"]), "the round's champion")
        judged = {CHAMPION: champion, **versions}
        _evaluations(db, round_, judged, results, now)
        winner = versions[results.best] if results.improved and results.best else None
        if winner is not None:
            _promote(db, campaign, round_, winner)
            before_after.add_before_after(
                db, [{**row, "round_id": round_["id"]} for row in results.showcase], now
            )
        outcome = _outcome(db, campaign, round_, bundle, results, versions)
        verdicts = must(records.bundle_of(db, round_["id"]), "the round's bundle")["verdicts"]
        usage = records.usage(db, round_["id"])
        kind, merged = _won_by(bundle, results) if winner is not None else ("group", None)
        rows = ledger_rows(campaign, round_, outcome, usage, verdicts, kind, merged)
        store.add_points(db, rows, now)
        note(db, round_, not_built(bundle, results))
        if current["state"] == "training":
            advance(db, round_["id"], "evaluating")
        advance(
            db,
            round_["id"],
            "done",
            winner_id=(winner or judged[CHAMPION])["id"],
            improved=int(winner is not None),
            finished_at=now,
        )
    return winner


def _won_by(bundle: Bundle, results: Results) -> tuple[str, set[int] | None]:
    """The crowned candidate's kind, and for a merge the groups whose adapters it merged (its
    points go to their contributors, crowd.rounds.awards)."""
    won = next(c for c in bundle.candidates if c.name == results.best)
    groups = {c.group for c in bundle.candidates if c.name in won.inputs and c.group is not None}
    return won.kind, (groups if won.kind == "merged" else None)


def not_built(bundle: Bundle, results: Results) -> list[str]:
    """A note per candidate the job could not make, with why (a merge of unlike adapters)."""
    notes = []
    for c in bundle.candidates:
        if c.name in results.failed:
            which = c.kind if c.group is None else f"group {group_name(c.group)}"
            notes.append(f"The {which} candidate was not built: {results.failed[c.name]}")
    return notes


def _versions(
    db: Database, campaign: Campaign, round_: Round, bundle: Bundle, results: Results, now: str
) -> dict[str, Version]:
    """A model version per candidate: 'candidate' with its adapter, or 'failed' with why; a
    merge names the versions it merged, a union that went on from the last round's union has
    that one as its parent."""
    versions: dict[str, Version] = {}
    for candidate in bundle.candidates:
        trained = candidate.name in results.trained
        path = str(adapter_path(campaign, round_, candidate.name)) if trained else None
        line = union_line(db, round_) if candidate.start else None
        sources = [versions[n]["id"] for n in candidate.inputs if n in results.trained] or None
        version_id = store.add_version(
            db,
            campaign["id"],
            now,
            adapter_path=path,
            status="candidate" if trained else "failed",
            round_id=round_["id"],
            group_index=candidate.group,
            parent_id=round_["champion_id"] if line is None else line["id"],
            kind=candidate.kind,
            sources=sources,
        )
        if not trained:
            store.set_version_status(db, version_id, "failed", results.failed[candidate.name])
        versions[candidate.name] = must(store.get_version(db, version_id), "a new version")
    return versions


def _evaluations(
    db: Database, round_: Round, judged: dict[str, Version], results: Results, now: str
) -> None:
    """Every score, with its per-sample detail, against the version it judged."""
    for name, score in results.scores.items():
        version = judged[name]
        store.add_evaluation(
            db,
            now,
            round_id=round_["id"],
            model_version_id=version["id"],
            group_index=version["group_index"],
            metric=score.metric,
            value=score.value,
            loss=score.loss,
            n_items=score.n_items,
            detail=score.detail,
        )


def _promote(db: Database, campaign: Campaign, round_: Round, winner: Version) -> None:
    store.set_version_status(db, round_["champion_id"], "retired")
    store.set_version_status(db, winner["id"], "champion")
    following = must(store.current_round(db, campaign["id"]), "the campaign's current round")
    if following["number"] == round_["number"] + 1 and following["state"] == "open":
        store.set_round_champion(db, following["id"], winner["id"])


def _outcome(db, campaign, round_, bundle: Bundle, results: Results, versions) -> RoundOutcome:
    """The points rule's input: each recorded contribution with the job's value for it."""
    owner = {
        r["correction_id"]: r["participant_id"] for r in records.material(db, round_["id"], "train")
    }
    items = []
    for group, cid, _ in bundle.contributions():
        value = results.contributions[cid]
        vector = np.asarray(value["vector"], dtype=np.float32) if value["vector"] else None
        items.append(ContributionItem(owner[cid], group, vector, value["margin"]))
    members: dict[int, list[str]] = defaultdict(list)
    for item in items:
        if item.participant_id not in members[item.group_index]:
            members[item.group_index].append(item.participant_id)
    scores = {
        versions[c.name]["group_index"]: results.scores[c.name].oriented
        for c in bundle.candidates
        if c.name in results.trained and c.group is not None
    }
    target = np.asarray(bundle.target, dtype=np.float32) if bundle.target else None
    return RoundOutcome(
        round_id=round_["id"],
        task=campaign["task"],
        improved=results.improved,
        n_groups=campaign["n_groups"],
        group_scores=scores,
        members=dict(members),
        items=items,
        target=target,
    )
