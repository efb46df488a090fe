"""Input checks and rate limits. Every refusal is a `Refused` with a message a person can act on."""

from __future__ import annotations

import ipaddress
import math
import re
import threading
import time
import unicodedata
from collections import defaultdict, deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass


class Refused(ValueError):
    """An action was refused; `str(exc)` says why, `retry_after_s` when to try again."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Limits:
    max_message_chars: int = 2000
    max_rewrite_chars: int = 4000
    max_turns: int = 20  # user messages per conversation
    chats_per_minute: int = 12  # per participant
    submissions_per_minute: int = 30  # corrections per participant
    address_per_minute: int = 120  # all actions from one network (a /24 or /56; not venues)
    reviews_per_minute: int = 30  # reviews from one network (not venues; a person: submissions)
    undo_window_s: float = 120.0


ACTIVE_MARKUP = re.compile(
    r"<\s*/?\s*(script|style|iframe|frame|object|embed|img|image|svg|math|video|audio|source"
    r"|track|link|meta|base|form|input|button|textarea|select)\b"
    r"|<[^>]*\son\w+\s*="
    r"|(javascript|vbscript)\s*:"
    r"|data\s*:\s*[a-z]+/[\w.+-]+\s*[;,]",
    re.IGNORECASE,
)
"""Markup that loads or runs something in an HTML renderer. Everything a volunteer wrote is
shown inert here (`crowd.ui.components.inert`), so plain `<` and `>` (`x<y and y>z`, `<3`) and
harmless tags pass; these are refused still, because the exported data and the models trained
on it leave this app for viewers that may render them."""

_NAME = re.compile(r"^[\w .'\-]+$")
JOINERS = "\u200c\u200d"  # zero-width non-joiner and joiner: Persian, Indic scripts, emoji
TAGS = range(0xE0020, 0xE0080)  # emoji tag sequences (subdivision flags), after U+1F3F4


def _invisible(text: str) -> str | None:
    """The first control or format character that has no business in the text, or None.
    Joiners count only between two visible characters, emoji tags only in a flag sequence;
    bidirectional overrides, BOMs and the like are always refused (they disguise text)."""
    for i, ch in enumerate(text):
        if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co"):
            continue
        before, after = text[i - 1 : i], text[i + 1 : i + 2]
        if ch in JOINERS and before.strip() and after.strip() and after not in JOINERS:
            continue
        if ord(ch) in TAGS and before and (before == "\U0001f3f4" or ord(before) in TAGS):
            continue
        return ch
    return None


def clean_text(text: object, field: str, max_chars: int) -> str:
    """Trimmed `text`, or Refused: empty, too long, stray control characters, or markup that
    loads or runs something (`ACTIVE_MARKUP`)."""
    if not isinstance(text, str):
        raise Refused(f"The {field} must be text.")
    text = text.strip()
    if not text:
        raise Refused(f"The {field} is empty.")
    if len(text) > max_chars:
        raise Refused(f"The {field} is {len(text):,} characters long; the limit is {max_chars:,}.")
    if (ch := _invisible(text)) is not None:
        raise Refused(
            f"The {field} contains a control character (U+{ord(ch):04X}); please remove it."
        )
    if ACTIVE_MARKUP.search(text):
        raise Refused(
            f"The {field} contains active HTML (a script, an image, a frame or the like);"
            " please write plain text."
        )
    return text


MAX_ID = 2**63 - 1  # SQLite's largest integer: every row id fits, and nothing larger is one


def as_id(value: object, what: str) -> int:
    """A row id from a caller (an int, or a whole number as text or float from a form), or
    Refused naming the kind of id: anything else (huge, negative, a list, text) is not one."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdecimal() and len(value.strip()) <= 19:
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        shown = repr(value)[:24]
        raise Refused(f"A {what} id is a whole number like 12, not {shown}.")
    return value


def clean_name(name: object) -> str:
    """A display name: 2-32 letters, digits, spaces and . ' - _ ; shown as plain text."""
    name = clean_text(name, "display name", 32)
    if len(name) < 2 or not _NAME.match(name):
        raise Refused("A display name is 2-32 letters, digits, spaces or . ' - _")
    return name


class RateLimiter:
    """Sliding windows per key (one minute unless a call says otherwise; a key keeps its
    window). Not persisted: a restart forgives everyone."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def hit(self, key: str, limit: int, what: str, window_s: float = 60.0) -> None:
        """Record one event for `key`, or raise Refused saying when to retry; nothing is
        recorded then. At most `limit` events in any `window_s` seconds."""
        now = self._clock()
        with self._lock:
            events = self._events[key]
            while events and now - events[0] >= window_s:
                events.popleft()
            if len(events) >= limit:
                wait = window_s - (now - events[0])
                raise Refused(
                    f"Too many {what} in {_span(window_s)} (limit {limit}); "
                    f"try again in {_wait(wait)}.",
                    retry_after_s=wait,
                )
            events.append(now)


CALLER: ContextVar[str | None] = ContextVar("crowd_caller_address", default=None)
"""The network address of the request being handled, set by the UI around a handler, so that
checks deep in the domain (the organizer key) can back off per address."""


class KeyGuard:
    """Back-off after wrong keys, per source: after `free` failures in a row, each further one
    locks that source for twice as long as the last, up to `cap_s`. While locked, every attempt
    from that source is refused, right or wrong, so guessing gains nothing by hurrying; other
    sources are never refused, so no one can lock the organizer out. A source is an IPv4
    address or an IPv6 /64 (one subscriber's usual allocation).

    Overall, past `slow_after` failures from everywhere, each check waits a little first
    (`delay_s`, growing to `max_delay_s`): many sources guessing together are slowed, never
    refused, and a right key still works. A success clears its source; 15 quiet minutes clear
    the rest. Not persisted: a restart forgives everyone."""

    def __init__(
        self,
        free: int = 5,
        cap_s: float = 900.0,
        slow_after: int = 50,
        max_delay_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.free, self.cap_s, self._clock, self._sleep = free, cap_s, clock, sleep
        self.slow_after, self.max_delay_s = slow_after, max_delay_s
        self._failures: dict[str, tuple[int, float]] = {}  # source -> (count, locked until)
        self._overall: deque[float] = deque()  # when each recent failure happened
        self._lock = threading.Lock()

    def wait_s(self, address: str | None) -> float:
        """Seconds until `address` may try again (0 when it may now)."""
        now = self._clock()
        with self._lock:
            until = self._failures.get(source_of(address), (0, 0.0))[1]
        return max(0.0, until - now)

    def failures(self, address: str | None) -> int:
        """Wrong keys in a row from `address`'s source (refused attempts while locked excluded)."""
        with self._lock:
            return self._failures.get(source_of(address), (0, 0.0))[0]

    def delay_s(self) -> float:
        """How long every check waits now: 0 until many wrong keys came from everywhere."""
        now = self._clock()
        with self._lock:
            while self._overall and now - self._overall[0] > FORGET_AFTER_S:
                self._overall.popleft()
            excess = len(self._overall) - self.slow_after
        return 0.0 if excess <= 0 else min(self.max_delay_s, 0.02 * excess)

    def pause(self) -> None:
        """Wait `delay_s` before a check (in the caller's thread)."""
        if (delay := self.delay_s()) > 0:
            self._sleep(delay)

    def record(self, address: str | None, ok: bool) -> None:
        now, source = self._clock(), source_of(address)
        with self._lock:
            if ok:
                self._failures.pop(source, None)
                return
            self._overall.append(now)
            count, until = self._failures.get(source, (0, 0.0))
            if now - until > FORGET_AFTER_S:
                count = 0
            count += 1
            if count > self.free:
                until = now + min(self.cap_s, 2.0 ** (count - self.free - 1))
            self._failures[source] = (count, max(until, now))


def source_of(address: str | None) -> str:
    """The unit wrong keys are counted by: an IPv4 address, an IPv6 /64, or 'unknown'."""
    if not address:
        return "unknown"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


FORGET_AFTER_S = 900.0


def _span(seconds: float) -> str:
    """60 -> 'a minute', 3600 -> 'an hour', 300 -> '5 minutes'."""
    if seconds == 3600:
        return "an hour"
    if seconds == 60:
        return "a minute"
    return f"{seconds / 60:g} minutes" if seconds >= 120 else f"{seconds:g} s"


def _wait(seconds: float) -> str:
    """Seconds up to two minutes, then whole minutes rounded up (never 'try again in 0')."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{math.ceil(seconds / 60)} minutes"
