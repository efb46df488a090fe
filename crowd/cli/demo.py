"""`python -m crowd demo-round`: one whole round on the default model with scripted volunteers.

Creates a fresh campaign (emotion task, target joy, 3 groups) in its own data dir, lets nine
scripted volunteers chat and submit corrections through the service layer, closes the round,
trains and judges the candidates with the real worker, and prints a summary. The last line is
one JSON object: round, each group's metric, the champion's, the winner and the points awarded.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from crowd.campaigns import utcnow
from crowd.config import ASSETS

OPENERS = [
    "Tell me about your day.",
    "Write a reddit comment.",
    "What do you think of rain?",
    "Any plans for the weekend?",
    "How was the concert?",
    "What's for dinner?",
]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m crowd demo-round", description=__doc__)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the demo's database and adapters go (default: a new folder under the data dir)",
    )
    parser.add_argument("--volunteers", type=int, default=9)
    parser.add_argument("--corrections", type=int, default=36, help="at least 30")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv[1:])
    from crowd.config import ConfigError, check_data_dir, load_settings

    try:
        settings = load_settings()
        data_dir = args.data_dir or settings.data_dir / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
        check_data_dir(data_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = replace(settings, data_dir=data_dir, start_worker=False)
    print(f"demo data dir: {data_dir}")
    summary = run_demo(settings, args.volunteers, max(30, args.corrections), args.seed)
    print(json.dumps(summary))
    return 0


def run_demo(settings, volunteers: int, corrections: int, seed: int) -> dict:
    """The whole round; returns the summary printed as the last line."""
    from crowd.models import load_base
    from crowd.organizer import Organizer
    from crowd.rounds.engine import build_engine
    from crowd.rounds.worker import Worker
    from crowd.service import CrowdService
    from crowd.serving.generation import GenerationService

    rng = random.Random(seed)
    key = settings.organizer_secret or "demo"
    settings = replace(settings, organizer_secret=key, n_groups=3)
    print("loading the base model ...", flush=True)
    loaded = load_base(settings.model.base_model, settings.models_dir, settings.model.device)
    generation = GenerationService(loaded, settings.model)
    service = CrowdService(settings, generation, rng=rng)
    organizer = Organizer(service, rng)
    organizer.update_campaign(key, min_corrections=3, heldout_share=0.2, points_rule="paper")
    submitted = volunteer(service, volunteers, corrections, rng)
    reviewed = review(service)
    print(f"{submitted} corrections and {reviewed} reviews; closing round 1", flush=True)
    job_id = organizer.close_round(key)
    worker = Worker(settings.db_path, lambda: build_engine(settings, utcnow), utcnow, rng=rng)
    thread = threading.Thread(target=worker.step)
    started = time.monotonic()
    thread.start()
    while thread.is_alive():
        show_progress(organizer, key, job_id, time.monotonic() - started)
        thread.join(1.0)
    show_progress(organizer, key, job_id, time.monotonic() - started)
    print()
    generation.close()
    return summarize(service, job_id)


def volunteer(service, volunteers: int, corrections: int, rng: random.Random) -> int:
    """Scripted volunteers: each chats, then rewrites replies joyfully, labels and rates them."""
    rewrites = (ASSETS / "demo_rewrites.txt").read_text().splitlines()
    sessions = [service.join(f"Volunteer {i + 1}", consent=True) for i in range(volunteers)]
    done = 0
    while done < corrections:
        session = sessions[done % volunteers]
        reply = list(service.send(session.token, None, rng.choice(OPENERS)))[-1]
        service.rewrite(session.token, reply.message_id, rewrites[done % len(rewrites)])
        done += 1
        if done % 4 == 0:
            service.label(
                session.token, reply.message_id, "joy" if "!" in reply.text else "neutral"
            )
            done += 1
        print(f"\r  corrections: {done}/{corrections}", end="", flush=True)
    print()
    return done


def review(service, each: int = 6) -> int:
    """Every volunteer reviews up to `each` others' corrections from their queue: joyful
    rewrites and 'joy' labels are endorsed, the rest rejected."""
    from crowd.review import Reviews

    reviews = Reviews(service)
    tokens = [service.identities.sign(pid) for pid in service_participants(service)]
    done = 0
    for token in tokens:
        for item in reviews.queue(token, limit=each):
            joyful = "!" in (item["rewrite"] or "") or item["emotion"] == "joy"
            reviews.review(token, item["item_id"], "endorse" if joyful else "reject")
            done += 1
    return done


def service_participants(service) -> list[str]:
    from storage import queries

    with service.db() as db:
        return queries.participant_ids(db)


def show_progress(organizer, key: str, job_id: int, elapsed: float) -> None:
    from crowd.rounds.progress import step_text

    job = next(j for j in organizer.jobs(key) if j["id"] == job_id)
    p = job["progress"]
    bar = ""
    if p.get("steps"):
        filled = int(20 * p["step"] / p["steps"])
        bar = f"[{'#' * filled}{'.' * (20 - filled)}] {step_text(p)}"
        if p.get("eta_s") is not None:
            bar += f" eta {p['eta_s']:.0f}s"
    print(
        f"\r  {elapsed:6.0f}s {job['status']:<9} {p.get('stage', 'queued'):<18} {bar:<60}",
        end="",
        flush=True,
    )


def summarize(service, job_id: int) -> dict:
    from crowd.groups import candidate_name, group_name
    from storage import rounds as store
    from storage.rows import must

    with service.db() as db:
        job = must(store.get_job(db, job_id), f"job {job_id}")
        round_ = must(store.get_round(db, must(job["round_id"], "its round")), "its round")
        evaluations = store.round_evaluations(db, round_["id"])
        points = store.points_for_round(db, round_["id"])
        winner = store.get_version(db, round_["winner_id"]) if round_["winner_id"] else None
    metrics = {
        group_name(e["group_index"]): round(e["value"], 4)
        for e in evaluations
        if e["group_index"] is not None
    }
    champion = next((e["value"] for e in evaluations if e["group_index"] is None), None)
    print(
        f"round {round_['number']}: {round_['state']}, job {job['status']}"
        + (f" ({job['error']})" if job["error"] else "")
    )
    for name, value in metrics.items():
        print(f"  {name:<8} {evaluations[0]['metric']} = {value}")
    if champion is not None:
        print(f"  champion {champion:.4f}")
    improved = bool(round_["improved"])
    kept = "champion kept"
    winner_name = (
        candidate_name(winner["kind"], winner["group_index"]) if improved and winner else kept
    )
    print(
        f"winner: {winner_name}; {len(points)} ledger rows, {sum(p['amount'] for p in points):g} points"
    )
    return {
        "round": round_["number"],
        "state": round_["state"],
        "job": job["status"],
        "metric": evaluations[0]["metric"] if evaluations else None,
        "groups": metrics,
        "champion": champion,
        "improved": improved,
        "winner": winner_name,
        "points": {p["participant_id"][:8]: p["amount"] for p in points},
    }
