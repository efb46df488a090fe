"""Who is calling: the client's network address behind trusted reverse proxies.

Anyone can write an `X-Forwarded-For` header; only a proxy we trust can vouch for one hop of
it. Each proxy appends the address it was contacted from, so the header is read from the
right: starting at the socket's peer, skip hops while they are trusted proxies, and the first
hop that is not one is the client. Hops left of it were written by the client and prove
nothing. (The rule uvicorn's ProxyHeadersMiddleware and MDN describe; it is switched off in
uvicorn so that this module alone decides, see `crowd.ui.launch_options`.)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

SPACES = "spaces"
"""The name for the Hugging Face Spaces proxy in CROWD_TRUSTED_PROXIES. A Space's container is
reached only through the platform's proxy, which connects from the private network (a peer such
as 10.16.3.80), so the private ranges stand for it."""

PRIVATE_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


def parse_proxies(raw: str) -> tuple[Network, ...]:
    """'10.0.0.1, 192.168.0.0/16, ::1, spaces' -> networks; ValueError naming a bad entry."""
    networks: list[Network] = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        if entry.lower() == SPACES:
            networks.extend(PRIVATE_NETWORKS)
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"{entry[:60]!r} is not an IP address or network (CIDR), nor {SPACES!r}"
            ) from None
    return tuple(networks)


PROXIES_RANGE = f"IPs, CIDRs, `{SPACES}`"
"""What CROWD_TRUSTED_PROXIES accepts, as the README's settings table says it."""


def parse_address(text: str) -> Address | None:
    """An address as a socket or a proxy writes it ('1.2.3.4', '1.2.3.4:5678', '::1',
    '[2001:db8::1]:443'), or None when it is not one."""
    text, port = text.strip(), ""
    if text.startswith("[") and "]" in text:
        text, port = text[1:].split("]", 1)
        port = port.removeprefix(":") or "0"
    elif text.count(":") == 1:  # IPv4 with a port; bare IPv6 has two colons or more
        text, port = text.split(":")
    if port and not port.isdigit():
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped  # '::ffff:1.2.3.4' is 1.2.3.4 on a dual-stack socket
    return address


def is_trusted(address: Address, trusted: Iterable[Network]) -> bool:
    return any(address.version == n.version and address in n for n in trusted)


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: Iterable[Network]
) -> str | None:
    """The client's address: `peer` (the socket's) unless it is a trusted proxy; then the
    right-most hop of the X-Forwarded-For header values that is not a trusted proxy. A hop
    that is not an address stops the walk at the trusted proxy that reported it, so garbage
    counts against that proxy rather than as a fresh address. None without a peer."""
    trusted = tuple(trusted)
    current = parse_address(peer) if peer else None
    if current is None:
        return peer[:64] if peer else None  # not an IP (a Unix socket): nothing to look behind
    hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(current, trusted):
            break
        previous = parse_address(hop)
        if previous is None:
            break
        current = previous
    return str(current)
