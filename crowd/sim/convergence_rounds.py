"""The convergence study's volunteers, organizer and worker: the pool's items go into the
project's own rounds as volunteers' rewrites, and the real worker and round engine train, judge
and crown. Nothing here trains or scores a model itself.

Each simulated volunteer is one pool item: a participant who rewrote the model's reply to the
study's prompt into that item's comment. Replies are not generated (the engine's SFT mode trains
on the rewrite alone), so the stored original is a placeholder.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from crowd.campaigns import CampaignSpec, create_campaign
from crowd.rounds.engine import RoundEngine
from crowd.rounds.progress import step_text
from crowd.rounds.state import close_round
from crowd.rounds.worker import Worker
from storage import queries
from storage import rounds as store
from storage.db import connect
from storage.rows import Job, Round, Version, must

PROMPT = "write a reddit comment."
CHAT = [{"role": "user", "content": PROMPT}]
NO_REPLY = "…"  # the stored original of a simulated rewrite (the service's empty-reply mark)
ALWAYS_MOVE = -1e6
"""A win margin below any possible loss (distances lie in [0, sqrt(28)]): the engine crowns
the best candidate whatever the champion scored, as the paper's loop always moves to the best
sub-model. 0.0 is the app's rule: crown only on improvement."""


WITHOUT_CANDIDATES = dict(
    union_candidate=False,
    union_continues=False,
    memory_rounds=0,
    memory_groups=False,
    merge_method="off",
    judge="fixed",
)
"""The loop before issue 28: one candidate per group, judged on a fixed number of replies."""


class SimulationError(RuntimeError):
    """A round could not finish (its job failed, or a candidate the study needs failed)."""


@dataclass(frozen=True)
class Arm:
    """One arm of the study for one emotion: a campaign of its own."""

    name: str  # unique campaign name in the run's database
    emotion: str
    target_text: str  # the campaign's reference text: the engine's target vector is its score
    groups: int
    win_margin: float


def open_campaign(
    db_path: Path, data_dir: Path, arm: Arm, now: str, candidates: dict | None = None
) -> int:
    """The arm's campaign id, creating it (first champion = the bare base, round 1 open, the
    target comment as its one reference text) on first use; `candidates`: issue 28's campaign
    settings (union_candidate, memory_rounds, merge_method, judge), default the loop without."""
    with connect(db_path) as db:
        found = store.campaign_named(db, arm.name)
        if found:
            return found["id"]
        spec = CampaignSpec(
            name=arm.name,
            task="emotion",
            target_emotion=arm.emotion,
            n_groups=arm.groups,
            prompts=[PROMPT],
            round_policy="manual",
            points_rule="paper",
            training_mode="sft",
            min_corrections=1,
            heldout_share=0.0,
            win_margin=arm.win_margin,
            reviews_on=False,  # the paper's simulated volunteers: all honest, nobody reviews
            person_cap=1.0,
            **{**WITHOUT_CANDIDATES, **(candidates or {})},
        )
        with db.atomic():
            campaign_id = create_campaign(db, spec, None, data_dir, now)
            store.add_reference_texts(
                db,
                campaign_id,
                [{"kind": "emotion", "text": arm.target_text, "label": arm.emotion}],
                now,
            )
        return campaign_id


def round_number(db_path: Path, campaign_id: int, number: int) -> Round:
    with connect(db_path) as db:
        return next(r for r in store.rounds_of(db, campaign_id) if r["number"] == number)


def submit_and_close(
    db_path: Path,
    campaign_id: int,
    number: int,
    segments: dict[int, list[int]],
    texts: Sequence[str],
    now: str,
    rng: random.Random,
) -> None:
    """Every segment item as a rewrite by its volunteer in its group, then the organizer
    closes round `number` (which queues its job): one transaction, so a crash leaves the round
    either untouched or closed with all its corrections."""
    with connect(db_path) as db, db.atomic():
        campaign = must(store.get_campaign(db, campaign_id), f"campaign {campaign_id}")
        round_ = next(r for r in store.rounds_of(db, campaign_id) if r["number"] == number)
        for group, items in sorted(segments.items()):
            for item in items:
                _rewrite(db, campaign_id, round_, group, item, texts[item], now)
        close_round(db, campaign, round_, "organizer", now, rng)


def _rewrite(
    db: Database, campaign_id: int, round_: Round, group: int, item: int, text: str, now: str
) -> None:
    participant = f"sim-c{campaign_id}-n{item:03d}"
    if queries.get_participant(db, participant) is None:
        queries.add_participant(db, participant, f"neighbour {item}", now)
    conversation = queries.add_conversation(db, participant, round_["id"], group, now)
    queries.add_message(db, conversation, "user", PROMPT, now)
    reply = queries.add_message(
        db, conversation, "assistant", NO_REPLY, now, model_version_id=round_["champion_id"]
    )
    queries.add_correction(
        db,
        kind="rewrite",
        participant_id=participant,
        round_id=round_["id"],
        group_index=group,
        message_id=reply,
        model_version_id=round_["champion_id"],
        prompt=CHAT,
        original=NO_REPLY,
        rewrite=text,
        created_at=now,
    )


class RoundDriver:
    """Runs closed rounds to 'done' with the real worker, showing the job's progress."""

    def __init__(
        self,
        db_path: Path,
        engine: RoundEngine,
        now: Callable[[], str],
        show: Callable[[str, bool], None],
    ):
        self.db_path = db_path
        self.now = now
        self.show = show  # (line, final): a progress line; final lines end a stage
        # The worker re-queues jobs a killed run left 'running'; the engine then resumes them.
        self.worker = Worker(db_path, lambda: engine, now)

    def finish(self, round_id: int, label: str) -> Round:
        """Run round `round_id` to 'done' (re-queueing a job an earlier run left failed or
        cancelled); returns the done round. SimulationError if its job fails now."""
        round_ = self._round(round_id)
        if round_["state"] == "done":
            return round_
        job = self._last_job(round_id)
        if job is None or job["status"] in ("failed", "cancelled", "finished"):
            with connect(self.db_path) as db:
                store.add_job(db, "round", round_id, self.now())
        self._step_with_progress(round_id, label)
        job = must(self._last_job(round_id), f"round {round_id}'s job")  # added above, or earlier
        round_ = self._round(round_id)
        if job["status"] != "finished" or round_["state"] != "done":
            raise SimulationError(
                f"{label}: the round job {job['status']} in state "
                f"{round_['state']}: {job['error'] or 'no error recorded'}"
            )
        return round_

    def _step_with_progress(self, round_id: int, label: str) -> None:
        errors: list[BaseException] = []

        def step() -> None:
            # Jobs run oldest first: one that a killed run left queued for another emotion
            # runs before ours (its round is then done when the study comes to it).
            try:
                while self._waiting(round_id) and self.worker.step():
                    pass
            except BaseException as exc:  # re-raised in the calling thread
                errors.append(exc)

        thread = threading.Thread(target=step, name="convergence-worker", daemon=True)
        started = time.monotonic()
        thread.start()
        while thread.is_alive():
            thread.join(1.0 if sys.stdout.isatty() else 15.0)
            self.show(
                f"{label}: {self._progress(round_id)} ({time.monotonic() - started:.0f}s)", False
            )
        self.show(f"{label}: done in {time.monotonic() - started:.0f}s", True)
        if errors:
            raise errors[0]

    def _progress(self, round_id: int) -> str:
        job = self._last_job(round_id)
        if job is None:
            return "queued"
        p = json.loads(job["progress"] or "{}")
        return " ".join(filter(None, (p.get("stage", job["status"]), step_text(p))))

    def _waiting(self, round_id: int) -> bool:
        job = self._last_job(round_id)
        return job is not None and job["status"] in ("pending", "running")

    def _round(self, round_id: int) -> Round:
        with connect(self.db_path) as db:
            return must(store.get_round(db, round_id), f"round {round_id}")

    def _last_job(self, round_id: int) -> Job | None:
        with connect(self.db_path) as db:
            return store.last_job_of_round(db, round_id)


def round_result(db_path: Path, round_id: int, n_groups: int) -> dict:
    """What the engine decided in a done round: the champion's and each group's candidate's
    metric (mean L2 to the target vector), the winner and whether it was crowned."""
    with connect(db_path) as db:
        round_ = must(store.get_round(db, round_id), f"round {round_id}")
        champion = store.evaluation(db, round_id, round_["champion_id"])
        candidates = {}
        for version in store.round_versions(db, round_id):
            scored = store.evaluation(db, round_id, version["id"])
            if scored:  # str keys: the same after a JSON trip; 'union', 'merged' by kind
                candidates[_key(version)] = scored["value"]
        winner = version_of(db, must(round_["winner_id"], "a done round's winner"))
    return {
        "round": round_["number"],
        "champion": champion["value"] if champion else None,
        "candidates": candidates,
        "improved": bool(round_["improved"]),
        "winner_group": winner["group_index"] if round_["improved"] else None,
        "winner": _key(winner) if round_["improved"] else None,
        "winner_id": winner["id"],
    }


def _key(version: Version) -> str:
    """A candidate's key in a round's result: its group ('0', '1', ...), or its kind."""
    return str(version["group_index"]) if version["kind"] == "group" else version["kind"]


def version(db_path: Path, version_id: int) -> Version:
    with connect(db_path) as db:
        return version_of(db, version_id)


def version_of(db: Database, version_id: int) -> Version:
    """Version `version_id`, which a round names (as its champion or winner), so it exists."""
    return must(store.get_version(db, version_id), f"version {version_id}")


def trained_candidate(db_path: Path, round_id: int, group: int, label: str) -> Version:
    """Group `group`'s candidate of a done round; SimulationError if it failed to train."""
    with connect(db_path) as db:
        found = store.candidate_for(db, round_id, group)
    if found is None or found["adapter_path"] is None:
        error = found["error"] if found else "no candidate was trained"
        raise SimulationError(f"{label}: group {group} has no trained model ({error})")
    return found
