"""The poisoning study's crowd: honest volunteers and adversaries acting through the real
`CrowdService` (join, send, another, rewrite, label, choose) and `Reviews` (queue, review).
Nothing here stores a correction or a review itself.

Replies are not decoded: `ScriptedReplies` is a generation service (the same protocol as
`crowd.serving`'s `Generation`) that answers with a text the crowd drew from the data file
(any emotion's neighbourhood), so that labels, A/B picks and reviews of them mean something
and both arms see the same replies. SFT trains on rewrites, picked replies and on-target labels
(crowd.lessons), so the replies matter only as material for those.

Roles (see ROLES):
  honest    rewrites a reply into one of the target's neighbour texts, labels the reply as the
            page then shows it (their rewrite) with the scorer's top emotion, picks the A/B
            reply nearer the target (reply A as shown) ('both_bad' when neither
            is near it: replies are drawn from every emotion, and teaching the less wrong one
            would teach an off-target reply), reviews by the scorer (endorse a text near the
            target, a label the scorer agrees with, the same pick), each verdict or pick
            flipped to a wrong one with probability --noise
  flooder   sends --flood messages and rewrites every reply into the same off-target text,
            rewriting its first reply again and again (the service keeps one live correction
            per person, kind and reply); reviews at random
  saboteur  rewrites into another emotion's neighbour text (fluent, plausible, off-target),
            labels the reply (their rewrite) with the target emotion, picks the farther reply;
            reviews at random
  random    labels with a random emotion and picks at random; reviews at random
  ring      a saboteur that endorses every ring member's correction and rejects the rest
  sybil-ring    the same ring, as one person on one network: as many pseudonyms as the join
            limit allows (one per adversary slot; a join the service refuses is a slot lost)
  many-sources  the same ring with each pseudonym on a network of its own (a VPN)

Every simulated person acts from an address of their own network (a /24 each: every honest
volunteer is a voice of their own), except the sybil ring, whose pseudonyms share 192.0.2.0/24.
With sign-in (`--sign-in`) everyone joins with a Hugging Face account of their own, and the ring
with `--ring-accounts` accounts between all its pseudonyms: one account is one pseudonym, so
the ring's slots fold into that many people. A ring member endorses what it recognises as the
ring's work (the ring shares its memory: the database) and rejects everything else; reviews are
dealt by the real review API, so a ring on one network is never dealt its own work.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crowd.emotions import GOEMOTIONS_LABELS
from crowd.lessons import about
from crowd.limits import Refused
from crowd.review import Item, Reviews
from crowd.service import CrowdService, Reply
from crowd.serving.protocol import BASE, Progress, Sampling
from storage.rows import Correction, Participant, must
from storage.vocabulary import VERDICTS, Verdict

PROMPT = "write a reddit comment."
ROLES = ("honest", "flooder", "saboteur", "random", "ring", "sybil-ring", "many-sources")
ADVERSARIES = ROLES[1:]
RINGS = ("ring", "sybil-ring", "many-sources")  # one coalition: they endorse each other
Work = tuple[str, str, str | None, str | None, str | None]
"""A correction as anyone who sees it can tell it apart: its kind, reply and value."""


@dataclass(frozen=True)
class Volunteer:
    name: str  # v000, v001, ... (the same in every arm)
    role: str
    address: str | None = None  # where they act from (`place`)
    account: str | None = None  # their Hugging Face account, with sign-in


def place(crowd: list[Volunteer], sign_in: bool = False, ring_accounts: int = 1) -> list[Volunteer]:
    """Each volunteer's address and, with sign-in, account (see the module docstring)."""
    placed, rings = [], {"sybil-ring": 0, "many-sources": 0}
    for i, v in enumerate(crowd):
        account = f"sim-{v.name}" if sign_in else None
        if v.role in rings:
            k = rings[v.role]
            rings[v.role] += 1
            if v.role == "sybil-ring":
                address = f"192.0.2.{10 + k % 240}"
            else:
                address = f"198.{18 + k // 250}.{k % 250}.7"
            account = f"ring-{k % max(1, ring_accounts)}" if sign_in else None
        else:
            address = f"10.{20 + i // 250}.{i % 250}.1"
        placed.append(Volunteer(v.name, v.role, address, account))
    return placed


@dataclass(frozen=True)
class Material:
    """What the crowd writes with: the target's neighbours (honest rewrites), other emotions'
    neighbours (sabotage), every text (replies), and the scorer's view of texts."""

    emotion: str
    neighbours: Sequence[str]
    off_target: Sequence[str]
    replies: Sequence[str]
    vector: Callable[[str], np.ndarray]  # the scorer's (28,) vector of a text (cached)
    centroid: np.ndarray  # the target neighbourhood's mean vector
    near: float  # a text this close to the centroid reads as on target to an honest reviewer

    def distance(self, text: str) -> float:
        return float(np.linalg.norm(self.vector(text) - self.centroid))

    def top_emotion(self, text: str) -> str:
        return GOEMOTIONS_LABELS[int(np.argmax(self.vector(text)))]

    def honest_pick(self, a: str, b: str) -> str:
        """The reply nearer the target, or 'both_bad' when neither reads as on target (the
        product's answer for two wrong replies, which teaches nothing)."""
        da, db = self.distance(a), self.distance(b)
        if min(da, db) > self.near:
            return "both_bad"
        return "a" if da <= db else "b"

    def farther(self, a: str, b: str) -> str:
        """The reply farther from the target ('b' on a tie): a saboteur's pick."""
        return "a" if self.distance(a) > self.distance(b) else "b"


@dataclass(frozen=True)
class Behaviour:
    reviews: int = 8  # queue items each volunteer reviews per round
    flood: int = 4  # messages a flooder sends per round
    noise: float = 0.1  # chance an honest volunteer's label, pick or verdict is wrong


class _Names:
    """The adapter registry's protocol: every adapter name is usable as it is."""

    names: list[str] = []

    def ensure(self, name: str, path: Path | None) -> str:
        return BASE if path is None else name

    def load(self, name: str, path: Path) -> None:
        """Nothing to load: the replies are scripted."""

    def unload(self, name: str) -> None:
        """Nothing to unload."""


class ScriptedReplies:
    """A generation engine (crowd.serving.protocol.Generation) whose next reply is the text
    the crowd scripted for it, whatever the adapter."""

    ready = True

    def __init__(self) -> None:
        self.adapters = _Names()
        self.next: list[str] = []

    def default_sampling(self) -> Sampling:
        return Sampling()

    def stream(
        self, chat: Sequence[dict], adapter: str = BASE, sampling: Sampling | None = None
    ) -> Iterator[str]:
        yield self.reply(chat, adapter, sampling)

    def reply(
        self, chat: Sequence[dict], adapter: str = BASE, sampling: Sampling | None = None
    ) -> str:
        return self.next.pop(0) if self.next else "…"

    def replies(
        self,
        chats: Sequence[Sequence[dict]],
        adapters: Sequence[str],
        sampling: Sampling,
        seeds: Sequence[int | None] | None = None,
        max_batch: int = 16,
        progress: Progress | None = None,
    ) -> list[str]:
        return [self.reply(chat, name) for chat, name in zip(chats, adapters, strict=True)]

    def at_cap(self, text: str) -> bool:
        return False

    def close(self) -> None:
        """Nothing runs."""


def assign_roles(volunteers: int, adversaries: float, mix: dict[str, float]) -> list[Volunteer]:
    """round(volunteers * adversaries) adversaries, split over `mix` by weight (largest
    remainder), interleaved with the honest ones so that every group gets some of each."""
    n_bad = round(volunteers * adversaries)
    total = sum(mix.values())
    quotas = {r: n_bad * w / total for r, w in mix.items() if w > 0}
    counts = {r: int(q) for r, q in quotas.items()}
    for role in sorted(quotas, key=lambda r: counts[r] - quotas[r])[: n_bad - sum(counts.values())]:
        counts[role] += 1
    bad = [r for r in ADVERSARIES for _ in range(counts.get(r, 0))]
    step = volunteers / n_bad if n_bad else 0
    slots = {int(i * step) for i in range(n_bad)}
    roles, queue = [], iter(bad)
    for i in range(volunteers):
        roles.append(next(queue) if i in slots else "honest")
    return [Volunteer(f"v{i:03d}", role) for i, role in enumerate(roles)]


class CrowdRound:
    """One round of the crowd in one arm: everyone acts, then everyone reviews. A journal
    (one line per volunteer and phase) lets an interrupted round resume where it stopped."""

    def __init__(
        self,
        service: CrowdService,
        replies: ScriptedReplies,
        crowd: list[Volunteer],
        material: Material,
        behaviour: Behaviour,
        state: Path,
        seed: int,
    ):
        self.service, self.reviews, self.replies = service, Reviews(service), replies
        self.crowd, self.m, self.b, self.seed = crowd, material, behaviour, seed
        self.state = state  # folder holding tokens.json and journal.jsonl
        self.tokens = self._tokens()
        self.ring = {t[1] for v in crowd if v.role in RINGS and (t := self.tokens[v.name])}

    def _tokens(self) -> dict[str, list[str] | None]:
        """name -> [token, participant id], or None when the service refused the join (the
        join limit per network): every volunteer joins once per arm, as `sim-NAME` in every
        arm and run, so that the real regrouping (which orders people by id) deals identical
        crowds into identical groups."""
        path = self.state / "tokens.json"
        tokens = json.loads(path.read_text()) if path.exists() else {}
        upcoming: list[str] = []
        self.service.identities.new_id = lambda: upcoming.pop(0)
        for v in self.crowd:
            if v.name in tokens:
                continue
            known = self._known(v)
            if known:
                tokens[v.name] = [self.service.identities.sign(known["id"]), known["id"]]
            else:
                upcoming[:] = [f"sim-{v.name}"]
                try:
                    session = self.service.join(
                        f"volunteer {v.name}", True, hf_username=v.account, address=v.address
                    )
                    tokens[v.name] = [session.token, session.participant_id]
                except Refused:
                    tokens[v.name] = None  # e.g. the 21st pseudonym of one network
            path.write_text(json.dumps(tokens))
        return tokens

    def _known(self, v: Volunteer) -> Participant | None:
        """The participant `v` already is (joined before a crash that lost tokens.json, or an
        account another of the ring's pseudonyms signed in with)."""
        from storage import queries

        with self.service.db() as db:
            if v.account:
                return queries.participant_by_hf(db, v.account)
            return queries.get_participant(db, f"sim-{v.name}")

    def participants(self) -> dict[str, str]:
        """participant id -> role, for everyone who joined."""
        return {t[1]: v.role for v in self.crowd if (t := self.tokens[v.name])}

    def play(self, number: int) -> None:
        done = self._journal()
        for phase, act in (("act", self._act), ("review", self._review)):
            for i, v in enumerate(self.crowd):
                key = f"{number}/{phase}/{v.name}"
                if key not in done and self.tokens[v.name]:
                    act(v, i, number, random.Random(f"poisoning/{self.seed}/{key}"))
                    with open(self.state / "journal.jsonl", "a") as f:
                        f.write(json.dumps(key) + "\n")

    def _journal(self) -> set[str]:
        path = self.state / "journal.jsonl"
        return {json.loads(x) for x in path.read_text().splitlines()} if path.exists() else set()

    def _token(self, v: Volunteer) -> str:
        """`v`'s session token: only those who joined act (`play`)."""
        joined = self.tokens[v.name]
        if joined is None:
            raise LookupError(f"volunteer {v.name} never joined")
        return joined[0]

    # -- acting -------------------------------------------------------------------------

    def _send(self, v: Volunteer, rng: random.Random) -> int:
        self.replies.next.append(rng.choice(self.m.replies))
        return _stored(self.service.send(self._token(v), None, PROMPT, v.address))

    def _another(self, v: Volunteer, message: int, rng: random.Random) -> int:
        self.replies.next.append(rng.choice(self.m.replies))
        return _stored(self.service.another(self._token(v), message, v.address))

    def _act(self, v: Volunteer, index: int, number: int, rng: random.Random) -> None:
        token, at = self._token(v), v.address
        if v.role == "flooder":
            text = rng.choice(self.m.off_target)
            for message in [self._send(v, rng) for _ in range(self.b.flood)]:
                self.service.rewrite(token, message, text, at)
            for _ in range(self.b.flood - 1):  # the same reply again: replaces the last one
                self.service.rewrite(token, message, rng.choice(self.m.off_target), at)
            return
        a = self._send(v, rng)
        b = self._another(v, a, rng)
        other = self.replies_text(b)
        # After a rewrite the page shows it in place of reply A: the label and pick are about it.
        if v.role == "honest":
            item = (number - 1) * len(self.crowd) + index
            shown = self.m.neighbours[item % len(self.m.neighbours)]
            self.service.rewrite(token, a, shown, at)
            label = self.m.top_emotion(shown)
            wrong = rng.random() < self.b.noise
            self.service.label(token, a, rng.choice(GOEMOTIONS_LABELS) if wrong else label, at)
            pick = self.m.honest_pick(shown, other)
            flip = rng.random() < self.b.noise
            self.service.choose(token, a, b, self.m.farther(shown, other) if flip else pick, at)
        elif v.role == "saboteur" or v.role in RINGS:
            shown = rng.choice(self.m.off_target)
            self.service.rewrite(token, a, shown, at)
            self.service.label(token, a, self.m.emotion, at)
            self.service.choose(token, a, b, self.m.farther(shown, other), at)
        else:  # random labeller and picker
            self.service.label(token, a, rng.choice(GOEMOTIONS_LABELS), at)
            self.service.choose(token, a, b, rng.choice(("a", "b")), at)

    def replies_text(self, message_id: int) -> str:
        from storage import queries

        with self.service.db() as db:
            return must(queries.get_message(db, message_id), f"message {message_id}")["content"]

    # -- reviewing ----------------------------------------------------------------------

    def _review(self, v: Volunteer, index: int, number: int, rng: random.Random) -> None:
        token = self._token(v)
        work = self._ring_work() if v.role in RINGS else set()
        for item in self.reviews.queue(token, self.b.reviews, v.address):
            verdict = self._verdict(v, item, rng, work)
            try:
                self.reviews.review(token, item["item_id"], verdict, v.address)
            except Refused:
                continue  # withdrawn or replaced since the queue was read

    def _verdict(self, v: Volunteer, item: Item, rng: random.Random, work: set[Work]) -> Verdict:
        if v.role in RINGS:  # the ring knows its own work when it sees it
            return "endorse" if _work(item, item["original"]) in work else "reject"
        if v.role != "honest":
            return rng.choice(VERDICTS)
        good = self._looks_good(item)
        if rng.random() < self.b.noise:
            good = not good
        return "endorse" if good else "reject"

    def _looks_good(self, item: Item) -> bool:
        if item["kind"] == "rewrite":
            return self.m.distance(must(item["rewrite"], "a rewrite's text")) <= self.m.near
        if item["kind"] == "emotion":
            return item["emotion"] == self.m.top_emotion(item["original"])
        return item["choice"] == self.m.honest_pick(item["original"], item["other_reply"] or "…")

    def _ring_work(self) -> set[Work]:
        """What the ring's members wrote (from the database: the ring's shared memory)."""
        from storage import queries

        with self.service.db() as db:
            rows = [
                must(queries.get_correction(db, cid), f"correction {cid}")
                for cid in queries.corrections_of(db, self.ring)
            ]
        return {_work(row, about(row)) for row in rows}


def _work(item: Item | Correction, reply: str) -> Work:
    """`reply`: the text the correction is about (a review item's `original`; `about(row)`)."""
    return (item["kind"], reply, item["rewrite"], item["choice"], item["emotion"])


def _stored(steps: Iterator[Reply]) -> int:
    """The id of the reply `steps` streamed: their last step carries it, once stored."""
    return must(list(steps)[-1].message_id, "the streamed reply")
