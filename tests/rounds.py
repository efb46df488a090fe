"""What the round tests share besides their fixtures (tests/conftest.py's `round_world`): the
campaign settings of the plain loop and of every candidate kind, and the steps of a round (the
crowd rewrites, the organizer closes, the worker runs it)."""

from __future__ import annotations

from storage import rounds as store
from tests.apps import KEY

JOY = dict(task="emotion", target_emotion="joy", min_corrections=2, heldout_share=0.34)
ONE_PER_GROUP = dict(union_candidate=False, memory_rounds=0, merge_method="off", judge="fixed")
ALL_KINDS = dict(  # every candidate kind of issue 28, and the judge in stages
    union_candidate=True, union_continues=True, memory_rounds=3, merge_method="ties_svd",
    judge="sequential",
)  # fmt: skip
HAPPY = "I am so happy today, what a wonderful day!"


def crowd_submits(service, people: int = 6, each: int = 3, text: str = HAPPY) -> list:
    """`people` volunteers each rewrite `each` replies into `text`; returns their sessions."""
    sessions = [service.join(f"Volunteer {i}", consent=True) for i in range(people)]
    for session in sessions:
        for turn in range(each):
            reply = list(service.send(session.token, None, f"Question {turn}?"))[-1]
            service.rewrite(session.token, reply.message_id, text)
    return sessions


def round_row(service, number: int) -> dict:
    campaign, _ = service.context()
    with service.db() as db:
        return next(r for r in store.rounds_of(db, campaign["id"]) if r["number"] == number)


def run_round(organizer, worker) -> dict:
    job_id = organizer.close_round(KEY)
    assert worker.step()
    return next(j for j in organizer.jobs(KEY) if j["id"] == job_id)
