"""One person, one voice: the sources actions come from, and the pseudonyms that share them.

Pseudonyms are free; networks and Hugging Face accounts cost something. Every action records
its **source**: the client's network (the address `crowd.network` resolves behind the trusted
proxies, aggregated to its /24 for IPv4 and its /56 for IPv6, as `net:203.0.113.0/24`) and, for
a person signed in with Hugging Face, the account (`hf:ada`). A /24 is what one household, office
or café router usually hands out, and a /56 is the smallest block an IPv6 provider usually
delegates to one customer (RIPE-690), so both stand for "one subscriber" while a script cannot
leave them by changing the last bits of its address.

The **voice** of a pseudonym in a campaign, the unit of caps, standing and review independence:

1. A pseudonym signed in with Hugging Face speaks for its account (the participants table keeps
   one pseudonym per account). Its networks are recorded and shown, never merged with others:
   an account is what sign-in costs, and a class of signed-in students need not be a venue.
2. Anonymous pseudonyms seen on a common network are one voice, transitively: the connected
   components of the graph pseudonym - network (networkx). A pseudonym seen on two networks
   joins them, so puppets joined from many addresses and then used from one are still one
   voice. A phone moving between home and a café joins those two networks too: the price of
   the rule is that two people who once shared a network are one voice for that campaign.
3. A network the organizer declared a **venue** (campaign `venues`: CIDRs of classrooms or labs
   behind one router) joins no one: each pseudonym seen there counts on its own, but two
   pseudonyms sharing a venue are not independent of each other (their reviews of each other
   establish no trust; `Voices.independent`). Venues are matched at the granularity of
   sources: a /24 (or /56) that overlaps a venue CIDR is that venue.
4. A pseudonym never seen on a network (actions without an address: in-process scripts and
   simulations that carry no source) is its own voice.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import networkx as nx

from crowd.network import Network, parse_address

NET, ACCOUNT, PSEUDONYM = "net:", "hf:", "p:"
IPV4_PREFIX, IPV6_PREFIX = 24, 56  # one source's block (see the module docstring)
VENUE_MIN_PREFIX = {4: 16, 6: 32}  # a venue broader than this would switch voices off
MAX_VENUES = 100


def network_source(address: str | None) -> str | None:
    """'203.0.113.7' -> 'net:203.0.113.0/24'; '2001:db8:0:1234::5' -> 'net:2001:db8:0:1200::/56';
    None for no address or one that is not an IP (a Unix socket)."""
    parsed = parse_address(address) if address else None
    if parsed is None:
        return None
    prefix = IPV4_PREFIX if parsed.version == 4 else IPV6_PREFIX
    return NET + str(ipaddress.ip_network(f"{parsed}/{prefix}", strict=False))


def account_source(hf_username: str | None) -> str | None:
    return ACCOUNT + hf_username if hf_username else None


def parse_venues(raw: object) -> tuple[Network, ...]:
    """The venues setting (CIDRs separated by commas or new lines) as networks, or ValueError
    saying which entry is wrong: not a network, or broader than a /16 (IPv4) or /32 (IPv6)."""
    if raw is None:
        return ()
    if not isinstance(raw, str):
        raise ValueError("must be text: CIDRs such as 192.0.2.0/24, one per line")
    entries = [e.strip() for e in raw.replace(",", "\n").splitlines() if e.strip()]
    if len(entries) > MAX_VENUES:
        raise ValueError(f"lists {len(entries)} networks; at most {MAX_VENUES}")
    networks = []
    for entry in entries:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(
                f"{entry[:60]!r} is not an IP network (CIDR) such as 192.0.2.0/24"
            ) from None
        if network.prefixlen < VENUE_MIN_PREFIX[network.version]:
            widest = VENUE_MIN_PREFIX[network.version]
            raise ValueError(
                f"{entry[:60]!r} is broader than a /{widest}: name the venue's own network"
            )
        networks.append(network)
    return tuple(networks)


def venue_text(networks: Iterable[Network]) -> str:
    """The stored form: one normalized CIDR per line."""
    return "\n".join(str(n) for n in networks)


def venue_of(source: str, venues: tuple[Network, ...]) -> str | None:
    """The venue (its CIDR) that a network source overlaps, or None."""
    if not venues or not source.startswith(NET):
        return None
    network = ipaddress.ip_network(source[len(NET) :])
    for venue in venues:
        if venue.version == network.version and venue.overlaps(network):
            return str(venue)
    return None


@dataclass(frozen=True)
class Voices:
    """Who speaks with whom in one campaign (see the module docstring)."""

    voice: dict[str, str]  # pseudonym -> voice id ('net:...', 'hf:...' or 'p:<pseudonym>')
    venues: dict[str, frozenset[str]] = field(default_factory=dict)  # pseudonym -> venues
    sources: dict[str, frozenset[str]] = field(default_factory=dict)  # voice -> its sources

    def of(self, pseudonym: str) -> str:
        return self.voice.get(pseudonym, PSEUDONYM + pseudonym)

    def independent(self, a: str, b: str) -> bool:
        """Whether `a` and `b` are different voices outside any venue they share."""
        return self.of(a) != self.of(b) and not (
            self.venues.get(a, frozenset()) & self.venues.get(b, frozenset())
        )

    def members(self) -> dict[str, list[str]]:
        """voice -> its pseudonyms (those seen on a source)."""
        found: dict[str, list[str]] = defaultdict(list)
        for pseudonym, voice in sorted(self.voice.items()):
            found[voice].append(pseudonym)
        return dict(found)


def voices_of(
    sightings: Iterable[tuple[str, str]], accounts: dict[str, str], venues: Iterable[Network] = ()
) -> Voices:
    """The voices of a campaign from its (pseudonym, source) sightings; `accounts` maps a signed-in
    pseudonym to its Hugging Face username, `venues` are the campaign's venue networks."""
    venues = tuple(venues)
    graph = nx.Graph()
    in_venue: dict[str, set[str]] = defaultdict(set)
    seen: dict[str, set[str]] = defaultdict(set)
    for pseudonym, source in sightings:
        seen[pseudonym].add(source)
        venue = venue_of(source, venues)
        if venue:
            in_venue[pseudonym].add(venue)
        elif pseudonym not in accounts and source.startswith(NET):
            graph.add_edge(("p", pseudonym), ("s", source))
    voice: dict[str, str] = {}
    sources: dict[str, frozenset[str]] = {}
    for part in nx.connected_components(graph):
        nets = sorted(name for kind, name in part if kind == "s")
        for kind, name in part:
            if kind == "p":
                voice[name] = nets[0]
        sources[nets[0]] = frozenset(nets)
    for pseudonym, mine in seen.items():
        if pseudonym in accounts:
            voice[pseudonym] = ACCOUNT + accounts[pseudonym]
        elif pseudonym not in voice:  # seen in venues only (or on no network at all)
            voice[pseudonym] = PSEUDONYM + pseudonym
        sources.setdefault(voice[pseudonym], frozenset(mine))
    return Voices(voice, {p: frozenset(v) for p, v in in_venue.items()}, sources)
