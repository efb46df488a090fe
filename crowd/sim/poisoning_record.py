"""What an arm of the poisoning study left in its database, read after its rounds: the
champion after each round, the kind each crowned round crowned, whose examples trained, the
adversaries' share of the actions and the points (crowd.sim.poisoning_run reports them)."""

from __future__ import annotations

import json
from pathlib import Path

from crowd.sim.convergence_rounds import version_of
from storage.rows import Round, must


def _winner(round_: Round) -> int:
    """The version a done round crowned or kept (crowd.rounds.crown sets it)."""
    return must(round_["winner_id"], f"round {round_['number']}'s winner")


def champions(out: Path, arm: str, campaign_id: int) -> list[tuple[int, int, str | None]]:
    """(round, version id, adapter path) of the champion after each done round; round 0 is
    the first champion (the base)."""
    from storage import rounds as store
    from storage.db import connect

    with connect(out / arm / "crowd.db") as db:
        rounds = [r for r in store.rounds_of(db, campaign_id) if r["state"] == "done"]
        path = [(0, rounds[0]["champion_id"])] if rounds else []
        path += [(r["number"], _winner(r)) for r in rounds]
        return [(n, v, version_of(db, v)["adapter_path"]) for n, v in path]


def crowned_kinds(out: Path, arm: str, campaign_id: int) -> list[str]:
    """The kind of candidate ('group', 'union', 'merged') each crowning round of the arm
    crowned, in round order."""
    from storage import rounds as store
    from storage.db import connect

    with connect(out / arm / "crowd.db") as db:
        return [
            version_of(db, _winner(r))["kind"]
            for r in store.rounds_of(db, campaign_id)
            if r["state"] == "done" and r["improved"]
        ]


def used_by(out: Path, arm: str, campaign_id: int) -> dict[str, int]:
    """Per participant, how many SFT examples the arm's rounds trained on came from them
    (in groups that trained: enough corrections and at least one example)."""
    from crowd.rounds.material import training_material
    from storage import rounds as store
    from storage.db import connect

    used: dict[str, int] = {}
    with connect(out / arm / "crowd.db") as db:
        campaign = must(store.get_campaign(db, campaign_id), f"campaign {campaign_id}")
        for round_ in store.rounds_of(db, campaign_id):
            if round_["state"] != "done":
                continue
            data, _ = training_material(db, campaign, round_)
            for group in data.values():
                if group.corrections < campaign["min_corrections"]:
                    continue
                for person, _, _ in group.contributions:
                    used[person] = used.get(person, 0) + 1
    return used


def action_share(db_path: Path, roles: dict[str, str]) -> float | None:
    """The adversaries' share of the crowd's actions: their corrections and reviews (every one,
    refused ones aside) over everyone's."""
    from storage.db import connect
    from storage.queries import actions_by_participant

    with connect(db_path) as db:
        acts = actions_by_participant(db).items()
    total = sum(n for _, n in acts)
    hostile = sum(n for p, n in acts if roles.get(p, "honest") != "honest")
    return round(hostile / total, 3) if total else None


def points(out: Path, arm: str, campaign_id: int) -> dict[str, float]:
    from storage import rounds as store
    from storage.db import connect

    with connect(out / arm / "crowd.db") as db:
        return store.points_totals(db, campaign_id)


def write_json(path: Path, value: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=1))
    partial.replace(path)
