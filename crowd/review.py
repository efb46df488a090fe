"""Peer review, dealt by the server: a reviewer asks for items, the server deals them
(`crowd.dealing` says which), and a verdict is accepted only on an item dealt to that reviewer.

Items are live corrections (rewrites, A/B picks, emotion labels) of the current and the last
round, and one in every `crowd.trust.GOLD_EVERY` dealt to a voice (at a place keyed by the
server's secret) is a gold item when there is one (a correction the organizer confirmed, or a
reference example shown as a rewrite), dealt unmarked: every item is named by
its deal's id, so a gold item looks like any other. What the reviews make of a correction is
`crowd.trust`'s rule. Each action is one transaction, as in `crowd.service`; a refusal stores
nothing.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import TypedDict

from sqlite_utils import Database

from crowd.assess import assess, voices
from crowd.campaigns import may_correct, not_a_contributor, parse_time
from crowd.dealing import DEAL_TTL_S, QUEUE_MAX, deal
from crowd.identity import load_secret
from crowd.lessons import Message, about, parse_prompt
from crowd.limits import Refused
from crowd.service import CrowdService, context_of, row_id
from crowd.trust import GOLD_EVERY
from crowd.voices import network_source
from storage import deals, queries, reviews
from storage import rounds as store
from storage.rows import Campaign, Correction, Participant, ReviewItem, must
from storage.vocabulary import VERDICTS, Kind

REVIEWED_KINDS: tuple[Kind, ...] = ("rewrite", "choice", "emotion")
"""The kinds peers review: a thumb is too small a claim to review."""
NOT_DEALT = "That item was not dealt to you: review the items your queue deals you."
SAME_VOICE = (
    "Someone on your network (or account) has already reviewed that item; one voice reviews "
    "an item once."
)
SET_ASIDE = "The organizers have set your contributions aside, so your reviews are not accepted."


class Item(TypedDict):
    """One item as a reviewer sees it, on the Review tab and through the API. A gold item looks
    like any other (a rewrite, its id its deal's)."""

    item_id: int  # the deal's id
    kind: str  # one of REVIEWED_KINDS
    group: int
    prompt: list[Message]  # the chat before the reply
    original: str  # the reply, as the correction's author saw it
    edited: bool  # whether that was their own rewrite of the model's text
    rewrite: str | None
    choice: str | None
    other_reply: str | None  # reply B of a pick, as its author saw it
    emotion: str | None
    reviews: int  # how many reviews it has so far


class Reviews:
    def __init__(self, service: CrowdService):
        self.service = service

    def queue(self, token: str | None, limit: int = 10, address: str | None = None) -> list[Item]:
        """Up to `limit` items dealt to the caller, as plain items: the ones dealt earlier and
        not yet answered or skipped first, then new ones (at most QUEUE_MAX open at a time)."""
        limit = max(1, min(int(limit), QUEUE_MAX))
        with self.service.action() as db:
            person = self._reviewer(db, token, address)
            held = self._still_open(db, person)
            room = min(limit - len(held[:limit]), QUEUE_MAX - len(held))
            fresh = self._deal(db, person, room) if room > 0 else []
            return [self._item(db, d) for d in [*held[:limit], *fresh]]

    def review(
        self, token: str | None, item_id: object, verdict: object, address: str | None = None
    ) -> int:
        """Store the caller's verdict on an item dealt to them; returns the item's id."""
        if verdict not in VERDICTS:
            raise Refused("A review is 'endorse' or 'reject'.")
        with self.service.action() as db:
            person = self._reviewer(db, token, address)
            limits = self.service.limits
            self.service.rate.hit(
                f"review:{person['id']}", limits.submissions_per_minute, "reviews"
            )
            origin = self.service.callers.origin(db, address)
            self.service.callers.hit(origin, "review", limits.reviews_per_minute, "reviews")
            found = self._dealt(db, item_id, person)
            now = self.service.now()
            if found["gold_id"] is None:
                correction = self._reviewable(db, found["correction_id"], person)
                _, round_ = context_of(db)
                reviews.add_review(
                    db, correction["id"], person["id"], str(verdict), round_["id"], now,
                    source=network_source(address), deal_id=found["id"],
                )  # fmt: skip
            deals.close_deal(db, found["id"], now, str(verdict) if found["gold_id"] else None)
            return found["id"]

    def skip(self, token: str | None, item_id: object, address: str | None = None) -> None:
        """Pass on an item dealt to the caller: it is not dealt to them (or their voice) again."""
        with self.service.action() as db:
            person = self._reviewer(db, token, address)
            deals.skip_deal(db, self._dealt(db, item_id, person)["id"], self.service.now())

    # -- checks ---------------------------------------------------------------------------

    def _reviewer(self, db: Database, token: str | None, address: str | None) -> Participant:
        """The caller, if they may review: not banned (`who`), not hidden, signed in where the
        campaign asks for it."""
        person = self.service.who(db, token, address)
        if person["hidden_at"]:
            raise Refused(SET_ASIDE)
        campaign, _ = context_of(db)
        if not may_correct(campaign, person):
            raise Refused(not_a_contributor(campaign))
        return person

    def _dealt(self, db: Database, item_id: object, person: Participant) -> dict:
        found = deals.get_deal(db, row_id(item_id, NOT_DEALT))
        if found is None or found["participant_id"] != person["id"]:
            raise Refused(NOT_DEALT)
        if found["answered_at"]:
            raise Refused("You have already reviewed that item.")
        if found["skipped_at"]:
            raise Refused("You skipped that item; ask your queue for the next one.")
        return found

    def _reviewable(self, db: Database, correction_id: int, person: Participant) -> Correction:
        # a deal names a stored correction, and none is ever deleted
        correction = must(queries.get_correction(db, correction_id), f"correction {correction_id}")
        if correction["participant_id"] == person["id"]:
            raise Refused("You cannot review your own corrections.")
        if not queries.is_live(db, correction["id"]):
            if correction["undone_at"] or correction["replaced_at"]:
                raise Refused("That correction was withdrawn by its author.")
            raise Refused("That correction was removed by the organizers.")
        if correction["round_id"] not in self._window(db):
            raise Refused("That correction's round is over; it can no longer be reviewed.")
        if reviews.get_review(db, correction["id"], person["id"]):
            raise Refused("You have already reviewed that item.")
        campaign, _ = context_of(db)
        voice = voices(db, campaign).of
        mine = voice(person["id"])
        if any(voice(r["participant_id"]) == mine for r in reviews.reviews_of(db, correction_id)):
            raise Refused(SAME_VOICE)
        return correction

    def _window(self, db) -> list[int]:
        """Ids of the rounds whose corrections can be reviewed: the current one and the last."""
        campaign, round_ = context_of(db)
        recent = [
            r for r in store.rounds_of(db, campaign["id"]) if r["number"] >= round_["number"] - 1
        ]
        return [r["id"] for r in recent if r["number"] <= round_["number"]]

    # -- dealing --------------------------------------------------------------------------

    def _still_open(self, db: Database, person: Participant) -> list[dict]:
        """The caller's open deals whose items can still be reviewed; the others are closed as
        skipped (withdrawn, hidden, or their round is over)."""
        window, kept = set(self._window(db)), []
        live = {c["id"] for c in reviews.reviewable(db, sorted(window), REVIEWED_KINDS)}
        for d in deals.open_deals(db, person["id"]):
            if d["gold_id"] is not None or d["correction_id"] in live:
                kept.append(d)
            else:
                deals.skip_deal(db, d["id"], self.service.now())
        return kept

    def _deal(self, db: Database, person: Participant, n: int) -> list[dict]:
        """Deal up to `n` new items (`crowd.dealing`), about one in GOLD_EVERY of them gold."""
        campaign, round_ = context_of(db)
        window, now = self._window(db), self.service.now()
        trust = assess(db, campaign)
        found = trust.voices
        mine = found.members().get(found.of(person["id"]), [person["id"]])
        dealt, dealt_gold = deals.dealt_to(db, mine)
        taken: dict[int, dict[str, str | None]] = {}
        since = (parse_time(now) - timedelta(seconds=DEAL_TTL_S)).isoformat(timespec="seconds")
        for cid, who in deals.in_flight(db, window, since):
            taken.setdefault(cid, {})[who] = None
        for cid, who, verdict in reviews.reviewers_of(db, window):
            taken.setdefault(cid, {})[who] = verdict
        candidates = [
            (c["id"], c["participant_id"])
            for c in reviews.reviewable(db, window, REVIEWED_KINDS)
            if c["id"] not in dealt
        ]
        picks = deal(
            candidates,
            person["id"],
            found,
            taken,
            campaign["min_reviews"] or 2,
            n,
            self.service.rng,
        )
        gold = [g for g in self._gold(db, campaign) if g["id"] not in dealt_gold]
        gold = [
            g for g in gold if not g["author"] or found.of(g["author"]) != found.of(person["id"])
        ]
        plan: list[dict] = []
        before, slot = deals.deals_made(db, mine), self._gold_slot(campaign, found.of(person["id"]))
        for cid in picks:
            if gold and (before + len(plan)) % GOLD_EVERY == slot:
                plan.append({"gold_id": gold.pop(self.service.rng.randrange(len(gold)))["id"]})
            plan.append({"correction_id": cid})
        made = []
        for p in plan[:n]:
            deal_id = deals.add_deal(db, person["id"], round_["id"], now, **p)
            made.append(must(deals.get_deal(db, deal_id), f"deal {deal_id}"))  # just added
        return made

    def _gold_slot(self, campaign: Campaign, voice: str) -> int:
        """Which of every GOLD_EVERY items dealt to `voice` is gold: one in each run of
        GOLD_EVERY, at a place no reviewer can predict (keyed by the server's secret)."""
        secret = load_secret(self.service.settings.data_dir, self.service.settings.identity_secret)
        digest = hashlib.sha256(f"{secret}:gold:{campaign['id']}:{voice}".encode()).digest()
        return int.from_bytes(digest[:4], "big") % GOLD_EVERY

    def _gold(self, db: Database, campaign: Campaign) -> list[dict]:
        """The campaign's live gold items, turning reference examples not yet gold into gold:
        an emotion text as a rewrite of one of the campaign's replies (good); a preference pair
        as its chosen reply rewriting the rejected one (good) and the reverse (bad)."""
        now = self.service.now()
        for ref in deals.references_without_gold(db, campaign["id"]):
            if ref["kind"] == "pair":
                prompt = ref["prompt"] or json.dumps([{"role": "user", "content": "Hello"}])
                for verdict, original, rewrite in (
                    ("endorse", ref["rejected"], ref["chosen"]),
                    ("reject", ref["chosen"], ref["rejected"]),
                ):
                    deals.add_gold(
                        db, campaign["id"], verdict, now, reference_id=ref["id"],
                        prompt=prompt, original=original, rewrite=rewrite,
                    )  # fmt: skip
                continue
            reply = deals.some_reply(db, campaign["id"], ref["id"])
            if reply is None:
                continue  # no reply to show it as rewriting yet
            prompt = json.dumps(queries.prompt_before(db, reply), ensure_ascii=False)
            deals.add_gold(
                db, campaign["id"], "endorse", now, reference_id=ref["id"],
                prompt=prompt, original=reply["content"], rewrite=ref["text"],
            )  # fmt: skip
        return [g for g in deals.gold_items(db, campaign["id"]) if g["live"]]

    def _item(self, db, dealt: dict) -> Item:
        """What a reviewer sees of a dealt item: the prompt, the reply and what was done to it.
        A gold item looks like the others."""
        gold = deals.get_gold(db, dealt["gold_id"]) if dealt["gold_id"] else None
        cid = dealt["correction_id"] or (gold and gold["correction_id"])
        if cid:
            # deals and gold name stored corrections, and none is ever deleted
            return _item(dealt["id"], must(reviews.item(db, cid), f"correction {cid}"))
        assert gold is not None  # a deal names a correction or a gold item (its table's CHECK)
        campaign, _ = context_of(db)
        return {
            "item_id": dealt["id"],
            "kind": "rewrite",
            "group": gold["id"] % campaign["n_groups"],
            "prompt": parse_prompt(gold["prompt"], gold["id"]),
            "original": gold["original"],
            "edited": False,
            "rewrite": gold["rewrite"],
            "choice": None,
            "other_reply": None,
            "emotion": None,
            "reviews": deals.gold_answered(db, gold["id"]),
        }


def _item(item_id: int, row: ReviewItem) -> Item:
    """What a reviewer sees of a correction: the prompt, the reply as its author saw it
    (crowd.lessons.about) and what was done to it."""
    return {
        "item_id": item_id,
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
