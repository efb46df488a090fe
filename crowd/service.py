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
from pathlib import Path
from typing import TypedDict

from sqlite_utils import Database

from crowd import campaigns
from crowd.callers import Callers
from crowd.campaigns import CampaignSpec, parse_time, utcnow
from crowd.config import Settings
from crowd.corrections import (  # noqa: F401 (ROUND_CLOSED, context_of, row_id: imported from here)
    NOT_IN_CHAT,
    ROUND_CLOSED,
    CorrectionActions,
    context_of,
    row_id,
)
from crowd.groups import assign_arrival, group_colour, group_name
from crowd.identity import Identities, load_secret
from crowd.limits import Limits, RateLimiter, Refused, clean_name, clean_text
from crowd.models import ModelError, ModelUnavailable
from crowd.serving.protocol import BASE, Generation
from crowd.serving.trimming import end_cleanly
from storage import queries
from storage import rounds as store
from storage.db import connect, migrate, transaction
from storage.rows import Campaign, Participant, Round, must

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Shown:
    """One message of a conversation as its owner's page shows it (storage.queries.SHOWN)."""

    message_id: int
    role: str
    text: str  # what the page shows: the volunteer's live rewrite of a reply, if any
    written: str  # what the model (or the volunteer) wrote
    rating: int | None  # the volunteer's live thumbs on the text shown: 1, -1 or None
    rating_id: int | None = None  # that rating's correction

    @property
    def edited(self) -> bool:
        return self.text != self.written


class Banner(TypedDict):
    """What the task banner tells one volunteer (`CrowdService.banner`)."""

    task: str  # 'emotion' or 'preference'
    target_emotion: str | None
    round: int  # the current round's number
    state: str
    seconds_left: int | None  # None: the round has no timer
    group: int
    group_name: str
    group_colour: str
    group_corrections: int  # this round's, of my group
    points: float  # mine, over the campaign
    prompts: list[str]  # the organizer's suggested prompts
    require_login: bool


class CrowdService(CorrectionActions):
    def __init__(
        self,
        settings: Settings,
        generation: Generation | None,
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

    def context(self) -> tuple[Campaign, Round]:
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
            known = queries.participant_by_hf(db, hf_username) if hf_username else None
            if known is None:
                self.callers.hit_joins(origin)
                participant_id = self.identities.new_id()
                queries.add_participant(db, participant_id, name, self.now(), hf_username)
                known = must(queries.get_participant(db, participant_id), participant_id)
            if hf_username:
                queries.set_hf_orgs(db, known["id"], hf_orgs or [])
            self.callers.seen(db, known, origin)
            return self._session(db, known)

    def resume(self, token: str | None) -> Session:
        """The session behind a stored token; forged or unknown tokens are refused."""
        with self.action() as db:
            return self._session(db, self.who(db, token))

    def who(self, db: Database, token: str | None, address: str | None = None) -> Participant:
        """The participant behind `token`, or Refused (forged, unknown or banned); with the
        caller's address, the action is counted and recorded against its source
        (`crowd.callers`)."""
        return self.callers.who(db, token, address)

    def _session(self, db: Database, person: Participant) -> Session:
        campaign, round_ = context_of(db)
        group = self._group_of(db, person["id"], campaign, round_)
        return Session(
            self.identities.sign(person["id"]), person["id"], person["display_name"], group
        )

    def _group_of(
        self, db: Database, participant_id: str, campaign: Campaign, round_: Round
    ) -> int:
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
        self, token: str | None, conversation_id: int | None, text: str, address: str | None = None
    ) -> Iterator[Reply]:
        """Store the message, stream the group's model's reply, store the reply."""
        text = clean_text(text, "message", self.limits.max_message_chars)
        with self.action() as db:
            person = self.who(db, token, address)
            self.rate.hit(f"chat:{person['id']}", self.limits.chats_per_minute, "messages")
            campaign, round_ = context_of(db)
            group = self._group_of(db, person["id"], campaign, round_)
            conversation_id = self._conversation(db, person["id"], conversation_id, round_, group)
            history = [  # as the volunteer sees it: a rewritten reply is its rewrite
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
        self,
        db: Database,
        participant_id: str,
        conversation_id: int | None,
        round_: Round,
        group: int,
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
        generation = self._generation()
        text = ""
        try:
            adapter = self.adapter_for(version_id)
            for text in generation.stream(chat, adapter):
                yield Reply(conversation_id, text)
        except ModelUnavailable as exc:  # the vLLM server is down or slow: nothing is stored
            raise Refused(str(exc)) from None
        except ModelError as exc:  # e.g. this group's adapter file is gone; other groups go on
            log.warning("no reply from version %s: %s", version_id, exc)
            raise Refused(
                "This group's model cannot be loaded right now; try again later."
            ) from None
        text = end_cleanly(text, cut=generation.at_cap(text)).strip() or "…"
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

    def _generation(self) -> Generation:
        """The model that replies, or Refused on a server started without one."""
        if self.generation is None:
            raise Refused("The model is not loaded on this server.")
        return self.generation

    def adapter_for(self, version_id: int) -> str:
        """The generation service's adapter name for a model version, loading it on first use."""
        generation = self._generation()
        with self.db() as db:
            version = store.get_version(db, version_id)
        if version is None:  # a round's champion is a stored version: a database gone wrong
            raise ModelError(f"model version {version_id} is not stored")
        path = version["adapter_path"]
        return generation.adapters.ensure(
            f"v{version_id}", self.settings.data_dir / path if path else None
        )

    def another(
        self,
        token: str | None,
        message_id: int,
        address: str | None = None,
        *,
        shown: str | None = None,
    ) -> Iterator[Reply]:
        """A second reply (B) to the same turn as reply A (`message_id`), for an A/B pick: from
        the conversation before A, as the volunteer sees it. `shown`: A's text on the page."""
        with self.action() as db:
            person = self.who(db, token, address)
            self.rate.hit(f"chat:{person['id']}", self.limits.chats_per_minute, "messages")
            message, round_ = self._own_reply(db, person, message_id, shown)
            if message["alternative_of"] is not None:
                raise Refused(NOT_IN_CHAT)
            chat = queries.prompt_before(db, message)
        yield from self._reply(
            message["conversation_id"], chat, round_["champion_id"], alternative_of=message["id"]
        )

    def conversation(self, token: str | None, conversation_id: int | None) -> list[Shown]:
        """The caller's conversation as their page shows it (nothing for someone else's)."""
        with self.db() as db:
            person = self.who(db, token)
            conversation = conversation_id and queries.get_conversation(db, int(conversation_id))
            if not conversation or conversation["participant_id"] != person["id"]:
                return []
            return [
                Shown(m["id"], m["role"], m["content"], m["written"], m["rating"], m["rating_id"])
                for m in queries.conversation_messages(db, conversation["id"])
            ]

    # -- what a volunteer sees ---------------------------------------------------------------

    def banner(self, token: str | None) -> Banner:
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
