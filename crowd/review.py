"""Peer review: volunteers endorse or reject other people's corrections, never their own.

The queue holds live corrections (rewrites, A/B picks, emotion labels) of the current and the
last round that the reviewer did not write and has not reviewed, fewest reviews first, spread
over the groups. What the reviews make of a correction is `crowd.trust`'s rule. Each action is
one transaction, as in `crowd.service`.
"""

from __future__ import annotations

from typing import Any

from crowd.lessons import about, parse_prompt
from crowd.limits import Refused
from crowd.service import CrowdService, context_of
from crowd.trust import VERDICTS
from storage import queries, reviews
from storage import rounds as store

REVIEWED_KINDS = ("rewrite", "choice", "emotion")  # a thumb is too small a claim to review
QUEUE_MAX = 20


class Reviews:
    def __init__(self, service: CrowdService):
        self.service = service

    def queue(self, token: str | None, limit: int = 10) -> list[dict[str, Any]]:
        """Up to `limit` corrections for the caller to review, as plain items."""
        limit = max(1, min(int(limit), QUEUE_MAX))
        with self.service.action() as db:
            person = self.service.who(db, token)
            rows = reviews.reviewable(db, self._window(db), person["id"], limit, REVIEWED_KINDS)
        return [_item(row) for row in rows]

    def review(self, token: str | None, correction_id: object, verdict: object) -> int:
        """Store the caller's verdict on someone else's correction; returns the review id."""
        if verdict not in VERDICTS:
            raise Refused("A review is 'endorse' or 'reject'.")
        with self.service.action() as db:
            person = self.service.who(db, token)
            correction = self._reviewable(db, correction_id, person["id"])
            self.service.rate.hit(
                f"review:{person['id']}", self.service.limits.submissions_per_minute, "reviews"
            )
            _, round_ = context_of(db)
            return reviews.add_review(
                db, correction["id"], person["id"], str(verdict), round_["id"], self.service.now()
            )

    def _reviewable(self, db, correction_id: object, reviewer: str) -> dict:
        try:
            correction = queries.get_correction(db, int(correction_id))  # type: ignore[call-overload]
        except (TypeError, ValueError):
            correction = None
        if correction is None or correction["kind"] not in REVIEWED_KINDS:
            raise Refused("That correction does not exist.")
        if correction["participant_id"] == reviewer:
            raise Refused("You cannot review your own corrections.")
        if correction["undone_at"] or correction["replaced_at"]:
            raise Refused("That correction was withdrawn by its author.")
        author = queries.get_participant(db, correction["participant_id"])
        if correction["hidden_at"] or author["banned_at"] or author["hidden_at"]:
            raise Refused("That correction was removed by the organizers.")
        if correction["round_id"] not in self._window(db):
            raise Refused("That correction's round is over; it can no longer be reviewed.")
        if reviews.get_review(db, correction["id"], reviewer):
            raise Refused("You have already reviewed that correction.")
        return correction

    def _window(self, db) -> list[int]:
        """Ids of the rounds whose corrections can be reviewed: the current one and the last."""
        campaign, round_ = context_of(db)
        recent = [
            r for r in store.rounds_of(db, campaign["id"]) if r["number"] >= round_["number"] - 1
        ]
        return [r["id"] for r in recent if r["number"] <= round_["number"]]


def _item(row: dict) -> dict[str, Any]:
    """What a reviewer sees of a correction: the prompt, the reply as its author saw it
    (crowd.lessons.about) and what was done to it."""
    return {
        "correction_id": row["id"],
        "kind": row["kind"],
        "group": row["group_index"],
        "prompt": parse_prompt(row["prompt"], row["id"]),
        "original": about(row),  # the text the correction is about, as its author saw it
        "edited": about(row) != row["original"],  # their own rewrite of the model's reply
        "rewrite": row["rewrite"],
        "choice": row["choice"],
        "other_reply": row.get("other_reply"),
        "emotion": row["emotion"],
        "reviews": row["n_reviews"],
    }
