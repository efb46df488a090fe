"""The actions the UI calls. Every method re-derives who the caller is from a signed token and
what they may touch from the database: the page never supplies a participant or group id.

Each action is one unit of work: one connection and one write transaction (storage.db.transaction),
so its checks and its writes see the same data. Refusals raise `crowd.limits.Refused` with a
message for the person, and the transaction rolls back: nothing is stored then. Streaming a reply
is the one exception: the question is stored, the model streams outside any transaction, then the
reply is stored.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from crowd import campaigns
from crowd.callers import Callers
from crowd.campaigns import (
    CampaignSpec,
    group_colour,
    group_name,
    may_correct,
    not_a_contributor,
    parse_time,
    utcnow,
)
from crowd.config import Settings
from crowd.emotions import GOEMOTIONS_LABELS
from crowd.generation import BASE, GenerationService
from crowd.groups import assign_arrival
from crowd.identity import Identities, load_secret
from crowd.limits import Limits, RateLimiter, Refused, clean_name, clean_text
from crowd.models import ModelError, ModelUnavailable
from crowd.replies import end_cleanly
from crowd.voices import network_source
from storage import queries
from storage import rounds as store
from storage.db import connect, migrate, transaction

log = logging.getLogger(__name__)

CHOICES = ("a", "b", "tie", "both_bad")


@dataclass(frozen=True)
class Session:
    token: str
    participant_id: str
    display_name: str
    group_index: int


@dataclass(frozen=True)
class Reply:
    """One streamed step of a reply; `message_id` is set on the last step, once it is stored."""

    conversation_id: int
    text: str
    message_id: int | None = None


class CrowdService:
    def __init__(
        self,
        settings: Settings,
        generation: GenerationService | None,
        limits: Limits = Limits(),  # noqa: B008 (frozen)
        now: Callable[[], str] = utcnow,
        rng: random.Random | None = None,
        initial_adapter: Path | None = None,
    ):
        self.settings = settings
        self.generation = generation
        self.limits = limits
        self.now = now
        self.rng = rng or random.Random()
        self.rate = RateLimiter()
        migrate(settings.db_path)
        self.identities = Identities(load_secret(settings.data_dir, settings.identity_secret))
        self.callers = Callers(self.identities, self.rate, limits, settings, now)
        self.ensure_campaign(CampaignSpec(n_groups=settings.n_groups), initial_adapter)

    def db(self):
        """A read connection (one unit of work that writes nothing)."""
        return connect(self.settings.db_path)

    def action(self):
        """One volunteer action: one connection, one write transaction."""
        return transaction(self.settings.db_path)

    # -- campaign and round context ------------------------------------------------------

    def ensure_campaign(self, spec: CampaignSpec, initial_adapter: Path | None = None) -> int:
        """The active campaign's id, creating one from `spec` on first start."""
        with self.action() as db:
            campaign = store.active_campaign(db)
            if campaign:
                return campaign["id"]
            return campaigns.create_campaign(
                db, spec, initial_adapter, self.settings.data_dir, self.now()
            )

    def context(self) -> tuple[dict, dict]:
        """(active campaign, its current round)."""
        with self.db() as db:
            return context_of(db)

    # -- identity --------------------------------------------------------------------------

    def join(
        self,
        display_name: str,
        consent: bool,
        hf_username: str | None = None,
        address: str | None = None,
        hf_orgs: list[str] | None = None,
    ) -> Session:
        """Register a consenting visitor and put them in a group. Nothing is stored without
        consent. `hf_orgs`: a signed-in person's organisations, kept for campaigns that ask."""
        if consent is not True:
            raise Refused("Please read the terms and tick the consent box first.")
        name = clean_name(display_name)
        with self.action() as db:
            origin = self.callers.origin(db, address)
            self.callers.hit(origin, "addr", self.limits.address_per_minute, "requests")
            known = hf_username and queries.participant_by_hf(db, hf_username)
            if not known:
                self.callers.hit_joins(origin)
                participant_id = self.identities.new_id()
                queries.add_participant(db, participant_id, name, self.now(), hf_username)
                known = queries.get_participant(db, participant_id)
            if hf_username:
                queries.set_hf_orgs(db, known["id"], hf_orgs or [])
            self.callers.seen(db, known, origin)
            return self._session(db, known)

    def resume(self, token: str | None) -> Session:
        """The session behind a stored token; forged or unknown tokens are refused."""
        with self.action() as db:
            return self._session(db, self.who(db, token))

    def who(self, db, token: str | None, address: str | None = None) -> dict:
        """The participant behind `token`, or Refused (forged, unknown or banned); with the
        caller's address, the action is counted and recorded against its source
        (`crowd.callers`)."""
        return self.callers.who(db, token, address)

    def _session(self, db, person: dict) -> Session:
        campaign, round_ = context_of(db)
        group = self._group_of(db, person["id"], campaign, round_)
        return Session(
            self.identities.sign(person["id"]), person["id"], person["display_name"], group
        )

    def _group_of(self, db, participant_id: str, campaign: dict, round_: dict) -> int:
        """The participant's group this round; assigned (balanced) on first sight, then sticky.
        The caller's write transaction makes the read-then-write of group sizes safe."""
        group = queries.membership(db, round_["id"], participant_id)
        if group is None:
            sizes = queries.group_sizes(db, round_["id"], campaign["n_groups"])
            group = assign_arrival(sizes, self.rng)
            queries.add_membership(db, round_["id"], participant_id, group, self.now())
        return group

    # -- chat ------------------------------------------------------------------------------

    def send(
        self, token: str, conversation_id: int | None, text: str, address: str | None = None
    ) -> Iterator[Reply]:
        """Store the message, stream the group's model's reply, store the reply."""
        text = clean_text(text, "message", self.limits.max_message_chars)
        with self.action() as db:
            person = self.who(db, token, address)
            self.rate.hit(f"chat:{person['id']}", self.limits.chats_per_minute, "messages")
            campaign, round_ = context_of(db)
            group = self._group_of(db, person["id"], campaign, round_)
            conversation_id = self._conversation(db, person["id"], conversation_id, round_, group)
            history = [
                {"role": m["role"], "content": m["content"]}
                for m in queries.conversation_messages(db, conversation_id)
            ]
            if sum(m["role"] == "user" for m in history) >= self.limits.max_turns:
                raise Refused(
                    f"This conversation reached {self.limits.max_turns} turns; start a new one."
                )
            queries.add_message(db, conversation_id, "user", text, self.now())
        chat = history + [{"role": "user", "content": text}]
        yield from self._reply(conversation_id, chat, round_["champion_id"])

    def _conversation(
        self, db, participant_id: str, conversation_id: int | None, round_: dict, group: int
    ) -> int:
        if conversation_id is not None:
            conversation = queries.get_conversation(db, int(conversation_id))
            if (
                conversation
                and conversation["participant_id"] == participant_id
                and conversation["round_id"] == round_["id"]
            ):
                return conversation["id"]
        # A new round (or someone else's id) starts a fresh conversation.
        return queries.add_conversation(db, participant_id, round_["id"], group, self.now())

    def _reply(
        self,
        conversation_id: int,
        chat: list[dict],
        version_id: int,
        alternative_of: int | None = None,
    ) -> Iterator[Reply]:
        if self.generation is None:
            raise Refused("The model is not loaded on this server.")
        text = ""
        try:
            adapter = self.adapter_for(version_id)
            for text in self.generation.stream(chat, adapter):
                yield Reply(conversation_id, text)
        except ModelUnavailable as exc:  # the vLLM server is down or slow: nothing is stored
            raise Refused(str(exc)) from None
        except ModelError as exc:  # e.g. this group's adapter file is gone; other groups go on
            log.warning("no reply from version %s: %s", version_id, exc)
            raise Refused(
                "This group's model cannot be loaded right now; try again later."
            ) from None
        text = end_cleanly(text, cut=self._at_cap(text)).strip() or "…"
        with self.action() as db:
            message_id = queries.add_message(
                db,
                conversation_id,
                "assistant",
                text,
                self.now(),
                model_version_id=version_id,
                alternative_of=alternative_of,
            )
        yield Reply(conversation_id, text, message_id)

    def _at_cap(self, text: str) -> bool:
        """Whether a reply ran into the token cap rather than ending on its own (re-encoding
        its text can differ from the sampled tokens by one)."""
        loaded = getattr(self.generation, "loaded", None)
        if loaded is None:  # a remote engine (vLLM): no local tokenizer; end as streamed
            return False
        tokenizer = loaded.tokenizer
        cap = self.generation.default_sampling().max_new_tokens
        return len(tokenizer.encode(text, add_special_tokens=False)) >= cap - 1

    def adapter_for(self, version_id: int) -> str:
        """The generation service's adapter name for a model version, loading it on first use."""
        with self.db() as db:
            version = store.get_version(db, version_id)
        path = version["adapter_path"]
        return self.generation.adapters.ensure(
            f"v{version_id}", self.settings.data_dir / path if path else None
        )

    def another(self, token: str, message_id: int, address: str | None = None) -> Iterator[Reply]:
        """A second reply to the same turn, for an A/B choice."""
        with self.action() as db:
            person = self.who(db, token, address)
            self.rate.hit(f"chat:{person['id']}", self.limits.chats_per_minute, "messages")
            message, round_ = self._own_reply(db, person, message_id)
            chat = queries.prompt_before(db, message)
        yield from self._reply(
            message["conversation_id"], chat, round_["champion_id"], alternative_of=message["id"]
        )

    # -- corrections -----------------------------------------------------------------------

    def _own_reply(self, db, person: dict, message_id: object) -> tuple[dict, dict]:
        """The reply, if it is the caller's, a model reply, and from the current round."""
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
        return message, round_

    def _submit(
        self, token: str, message_id: object, address: str | None, other_id: object = None, **fields
    ) -> int:
        """Store one correction of the caller's own reply (and, for an A/B pick, its second
        reply `other_id`), replacing their earlier one of the same kind (kept, marked replaced).
        Checks and writes are one transaction."""
        with self.action() as db:
            person = self.who(db, token, address)
            message, round_ = self._own_reply(db, person, message_id)
            if other_id is not None:
                fields["other_message_id"] = self._second_reply(db, person, message, other_id)
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
                "source": network_source(address),
                "created_at": self.now(),
                **fields,
            }
            correction["id"] = queries.add_correction(db, **correction)
            if correction["id"] is None:
                raise Refused(ROUND_CLOSED)
            queries.replace_earlier(db, correction, self.now())
            return correction["id"]

    def _second_reply(self, db, person: dict, message: dict, other_id: object) -> int:
        other, _ = self._own_reply(db, person, other_id)
        if other["alternative_of"] != message["id"]:
            raise Refused("Reply B is not a second reply to reply A.")
        return other["id"]

    def rewrite(self, token: str, message_id: int, text: str, address: str | None = None) -> int:
        """A better version of the reply: an SFT target, and with the original a DPO pair."""
        text = clean_text(text, "rewrite", self.limits.max_rewrite_chars)
        return self._submit(token, message_id, address, kind="rewrite", rewrite=text)

    def rate_reply(
        self, token: str, message_id: int, value: int, address: str | None = None
    ) -> int:
        """Thumbs up (1) or down (-1); a new rating of the same reply replaces the earlier one."""
        if value not in (1, -1):
            raise Refused("A rating is thumbs up or thumbs down.")
        return self._submit(token, message_id, address, kind="rating", rating=value)

    def label(self, token: str, message_id: int, emotion: str, address: str | None = None) -> int:
        if emotion not in GOEMOTIONS_LABELS:
            raise Refused(f"{str(emotion)[:40]!r} is not one of the 28 emotion labels.")
        return self._submit(token, message_id, address, kind="emotion", emotion=emotion)

    def choose(
        self, token: str, message_id: int, other_id: int, choice: str, address: str | None = None
    ) -> int:
        """Pick between reply A (`message_id`) and its second reply B (`other_id`)."""
        if choice not in CHOICES:
            raise Refused("Pick A, B, tie or both bad.")
        return self._submit(token, message_id, address, other_id, kind="choice", choice=choice)

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

    # -- what a volunteer sees ---------------------------------------------------------------

    def banner(self, token: str) -> dict:
        """Task, target, round, time left (s, or None), my group and its corrections."""
        with self.action() as db:
            person = self.who(db, token)
            campaign, round_ = context_of(db)
            group = self._group_of(db, person["id"], campaign, round_)
            counts = queries.group_correction_counts(db, round_["id"], campaign["n_groups"])
            totals = store.points_totals(db, campaign["id"])
        left = None
        if round_["closes_at"]:
            left = max(
                0, int((parse_time(round_["closes_at"]) - parse_time(self.now())).total_seconds())
            )
        return {
            "task": campaign["task"],
            "target_emotion": campaign["target_emotion"],
            "round": round_["number"],
            "state": round_["state"],
            "seconds_left": left,
            "group": group,
            "group_name": group_name(group),
            "group_colour": group_colour(group),
            "group_corrections": counts[group],
            "points": totals.get(person["id"], 0.0),
            "prompts": json.loads(campaign["prompts"] or "[]"),
            "require_login": bool(campaign["require_login"]),
        }

    def adapter_of_round(self) -> str:
        _, round_ = self.context()
        return self.adapter_for(round_["champion_id"]) if self.generation else BASE


ROUND_CLOSED = (
    "That reply is from a round that has closed; corrections count for the current round only."
)


def context_of(db) -> tuple[dict, dict]:
    """(active campaign, its current round) as `db` sees them."""
    campaign = store.active_campaign(db)
    return campaign, store.current_round(db, campaign["id"])


def _as_int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise Refused("That item does not exist.") from None
