"""Who is calling, and from where: the signed token, the caller's source, and the limits that
apply per source (`crowd.voices` says what a source is).

Every action that carries the caller's address records where it came from (a sighting of the
pseudonym on its network, and on its Hugging Face account when signed in), inside the action's
own transaction: a refused action records nothing. Limits per source count a network's
pseudonyms together, so 20 puppets on one router share one budget; a venue the organizer
declared (a classroom) is exempt from them, and its people keep their own per-person limits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlite_utils import Database

from crowd.config import Settings
from crowd.corrections import active_campaign
from crowd.identity import Identities
from crowd.limits import Limits, RateLimiter, Refused
from crowd.voices import account_source, network_source, parse_venues, venue_of
from storage import queries, sources
from storage.rows import Participant


@dataclass(frozen=True)
class Origin:
    """The caller's network as a source, and the venue it lies in (None: not a venue)."""

    network: str | None
    venue: str | None = None

    @property
    def limited(self) -> bool:
        """Whether per-source limits apply: a known network outside every venue."""
        return self.network is not None and self.venue is None


class Callers:
    def __init__(
        self,
        identities: Identities,
        rate: RateLimiter,
        limits: Limits,
        settings: Settings,
        now: Callable[[], str],
    ):
        self.identities, self.rate, self.limits = identities, rate, limits
        self.settings, self.now = settings, now

    def origin(self, db, address: str | None) -> Origin:
        """Where `address` puts the caller in the active campaign."""
        network = network_source(address)
        if network is None:
            return Origin(None)
        campaign = active_campaign(db)
        return Origin(network, venue_of(network, parse_venues(campaign["venues"])))

    def who(self, db: Database, token: str | None, address: str | None = None) -> Participant:
        """The participant behind `token`, or Refused (forged, unknown or banned). With the
        caller's `address`, the action counts against its source's budget and is recorded."""
        participant_id = self.identities.verify(token)
        person = participant_id and queries.get_participant(db, participant_id)
        if not person:
            raise Refused("Your identity could not be verified; please join again.")
        if person["banned_at"]:
            raise Refused("This account has been suspended by the organizers.")
        if address is not None:
            origin = self.origin(db, address)
            self.hit(origin, "addr", self.limits.address_per_minute, "requests")
            self.seen(db, person, origin)
        return person

    def seen(self, db: Database, person: Participant, origin: Origin) -> None:
        """Record one action of `person` from `origin` (and from their account) in the active
        campaign."""
        campaign = active_campaign(db)
        for source in (origin.network, account_source(person.get("hf_username"))):
            if source:
                sources.record(db, campaign["id"], person["id"], source, self.now())

    def hit(self, origin: Origin, kind: str, limit: int, what: str, window_s: float = 60) -> None:
        """Count one `kind` of action against the caller's source, or Refused when its budget
        is spent (venues and unknown networks have none)."""
        if origin.limited and limit:
            self.rate.hit(f"{kind}:{origin.network}", limit, what, window_s=window_s)

    def hit_joins(self, origin: Origin) -> None:
        # Per hour, not minute: a script minting identities is stopped, while a classroom
        # behind one router is declared a venue by its organizer. A returning Hugging Face
        # user is not a new volunteer.
        what = "new volunteers from your network"
        self.hit(origin, "join", self.settings.joins_per_hour, what, window_s=3600)
