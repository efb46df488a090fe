"""The volunteer's corrections of their own replies: rewrite, rating, emotion label, A/B pick,
undo. A part of `crowd.service.CrowdService` (its base class), kept apart to keep both readable.

What is stored is what was shown (crowd/lessons.py): every correction records the reply's text
as the volunteer's page displays it (`storage.queries.SHOWN`: their live rewrite stands for the
reply), the conversation before it as displayed, and for an A/B pick reply B as displayed. When
the page says which text it shows (`shown`), an action on a text that has changed since (a
rewrite saved or undone in another tab) is refused, and so is a pick of a pair the page does not
show. Refusals raise `Refused`; the transaction rolls back and nothing is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta

from sqlite_utils import Database

from crowd.campaigns import may_correct, not_a_contributor, parse_time
from crowd.emotions import GOEMOTIONS_LABELS
from crowd.limits import Limits, RateLimiter, Refused, clean_text
from crowd.voices import network_source
from storage import queries
from storage import rounds as store
from storage.rows import Campaign, Round
from storage.vocabulary import CHOICES, RATINGS


class CorrectionActions:
    """Needs, from CrowdService: `who`, `action`, `limits`, `rate`, `now`."""

    limits: Limits
    rate: RateLimiter
    now: Callable[[], str]
    who: Callable[..., dict]
    action: Callable[[], AbstractContextManager[Database]]

    def _own_reply(
        self, db, person: dict, message_id: object, shown: str | None = None
    ) -> tuple[dict, dict]:
        """The reply, if it is the caller's, a model reply, from the current round, and (when
        the page says what it shows, `shown`) still showing that text."""
        try:
            message_id = int(message_id)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise Refused("That reply does not exist.") from None
        message = queries.get_message(db, message_id)  # type: ignore[arg-type]
        if message is None or message["participant_id"] != person["id"]:
            raise Refused("That reply does not exist.")
        if message["role"] != "assistant":
            raise Refused("Only the model's replies can be corrected.")
        _, round_ = context_of(db)
        if message["round_id"] != round_["id"]:
            raise Refused(ROUND_CLOSED)
        if shown is not None and shown != message["shown"]:
            raise Refused(CHANGED)
        return message, round_

    def _submit(
        self,
        token: str,
        message_id: object,
        address: str | None,
        shown: str | None,
        pair: tuple[object, str | None] | None = None,
        **fields,
    ) -> int:
        """Store one correction of the caller's own reply, about the texts their page shows
        (crowd/lessons.py): `shown` is reply A's text there (None: as stored, for API callers),
        `pair` reply B's id and text for an A/B pick. It replaces their earlier one of the same
        kind (kept, marked replaced). Checks and writes are one transaction."""
        with self.action() as db:
            person = self.who(db, token, address)
            message, round_ = self._own_reply(db, person, message_id, shown)
            if pair is not None:
                other = self._second_reply(db, person, message, *pair)
                fields.update(other_message_id=other["id"], other_reply=other["content"])
            campaign, _ = context_of(db)
            if not may_correct(campaign, person):
                raise Refused(not_a_contributor(campaign))
            self.rate.hit(
                f"submit:{person['id']}", self.limits.submissions_per_minute, "corrections"
            )
            correction = {
                "participant_id": person["id"],
                "round_id": message["round_id"],
                "group_index": message["group_index"],
                "message_id": message["id"],
                "model_version_id": message["model_version_id"],
                "prompt": queries.prompt_before(db, message),
                "original": message["content"],
                "shown": message["shown"],
                "source": network_source(address),
                "created_at": self.now(),
                **fields,
            }
            correction["id"] = queries.add_correction(db, **correction)
            if correction["id"] is None:
                raise Refused(ROUND_CLOSED)
            queries.replace_earlier(db, correction, self.now())
            return correction["id"]

    def _second_reply(
        self, db, person: dict, message: dict, other_id: object, shown: str | None
    ) -> dict:
        """Reply B of a pick: the newest second reply to reply A, as the page shows it."""
        if message["alternative_of"] is not None:
            raise Refused(NOT_IN_CHAT)
        other, _ = self._own_reply(db, person, other_id, shown)
        if other["alternative_of"] != message["id"]:
            raise Refused("Reply B is not a second reply to reply A.")
        if queries.latest_alternative(db, message["id"]) != other["id"]:
            raise Refused(
                "That pair is not the one on your page any more: a newer second reply replaced "
                "reply B. Nothing was saved; pick between the two replies shown."
            )
        return other

    def rewrite(
        self,
        token: str,
        message_id: int,
        text: str,
        address: str | None = None,
        *,
        shown: str | None = None,
    ) -> int:
        """A better version of the reply: an SFT target, and with the model's text a DPO pair.
        From then on the rewrite stands for the reply (crowd/lessons.py)."""
        text = clean_text(text, "rewrite", self.limits.max_rewrite_chars)
        return self._submit(token, message_id, address, shown, kind="rewrite", rewrite=text)

    def rate_reply(
        self,
        token: str,
        message_id: int,
        value: int,
        address: str | None = None,
        *,
        shown: str | None = None,
    ) -> int:
        """Thumbs up (1) or down (-1) on the reply as shown; a new rating of the same reply
        replaces the earlier one."""
        if value not in RATINGS:
            raise Refused("A rating is thumbs up or thumbs down.")
        return self._submit(token, message_id, address, shown, kind="rating", rating=value)

    def label(
        self,
        token: str,
        message_id: int,
        emotion: str,
        address: str | None = None,
        *,
        shown: str | None = None,
    ) -> int:
        """One of the 28 emotion labels, on the reply as shown."""
        if emotion not in GOEMOTIONS_LABELS:
            raise Refused(f"{str(emotion)[:40]!r} is not one of the 28 emotion labels.")
        return self._submit(token, message_id, address, shown, kind="emotion", emotion=emotion)

    def choose(
        self,
        token: str,
        message_id: int,
        other_id: int,
        choice: str,
        address: str | None = None,
        *,
        shown: tuple[str, str] | None = None,
    ) -> int:
        """Pick between reply A (`message_id`) and its newest second reply B (`other_id`);
        `shown`: (A's text, B's text) as the page shows them."""
        if choice not in CHOICES:
            raise Refused("Pick A, B, tie or both bad.")
        a_text, b_text = shown if shown is not None else (None, None)
        return self._submit(
            token, message_id, address, a_text, (other_id, b_text), kind="choice", choice=choice
        )

    def undo(self, token: str, correction_id: int) -> None:
        """Withdraw one's own correction within the undo window (kept, marked undone)."""
        with self.action() as db:
            person = self.who(db, token)
            correction = queries.get_correction(db, _as_int(correction_id))
            if correction is None or correction["participant_id"] != person["id"]:
                raise Refused("That correction does not exist.")
            if correction["replaced_at"]:
                raise Refused("That correction was already replaced by your newer one.")
            age = parse_time(self.now()) - parse_time(correction["created_at"])
            if age > timedelta(seconds=self.limits.undo_window_s):
                raise Refused("The undo window for that correction has passed.")
            _, round_ = context_of(db)
            if correction["round_id"] != round_["id"]:
                raise Refused("That round is closed; its corrections are final.")
            queries.mark_undone(db, correction["id"], self.now())


ROUND_CLOSED = (
    "That reply is from a round that has closed; corrections count for the current round only."
)
CHANGED = (
    "That reply has changed since your page showed it (rewritten or restored in another tab?). "
    "Nothing was saved; reload the page to see it as it is now."
)
NOT_IN_CHAT = (
    "That is a second reply, not a reply in your chat; ask for another reply to a reply in "
    "your chat."
)


def context_of(db) -> tuple[Campaign, Round]:
    """(active campaign, its current round) as `db` sees them."""
    campaign = store.active_campaign(db)
    return campaign, store.current_round(db, campaign["id"])


def _as_int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise Refused("That item does not exist.") from None
