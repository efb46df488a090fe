"""Input checks and rate limits. Every refusal is a `Refused` with a message a person can act on."""

from __future__ import annotations

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


_TAG = re.compile(r"<\s*/?\s*[a-zA-Z!][^>]*>")
_NAME = re.compile(r"^[\w .'\-]+$")


def clean_text(text: object, field: str, max_chars: int) -> str:
    """Trimmed `text`, or Refused: empty, too long, control characters, or HTML markup."""
    if not isinstance(text, str):
        raise Refused(f"The {field} must be text.")
    text = text.strip()
    if not text:
        raise Refused(f"The {field} is empty.")
    if len(text) > max_chars:
        raise Refused(f"The {field} is {len(text):,} characters long; the limit is {max_chars:,}.")
    if any(
        unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") and ch not in "\n\t" for ch in text
    ):
        raise Refused(f"The {field} contains control characters; please remove them.")
    if _TAG.search(text):
        raise Refused(f"The {field} contains HTML markup (<...>); please write plain text.")
    return text


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
    """Back-off after wrong keys, per address and overall: after `free` failures in a row, each
    further one locks that address (or, past `free_overall`, everyone) for twice as long as the
    last, up to `cap_s`. While locked every attempt is refused, right or wrong, so guessing
    gains nothing by hurrying. A success clears its address; 15 quiet minutes clear the rest.
    Not persisted: a restart forgives everyone."""

    def __init__(
        self,
        free: int = 5,
        free_overall: int = 50,
        cap_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.free, self.free_overall, self.cap_s, self._clock = free, free_overall, cap_s, clock
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (count, locked until)
        self._lock = threading.Lock()

    def wait_s(self, address: str | None) -> float:
        """Seconds until `address` may try again (0 when it may now)."""
        now = self._clock()
        with self._lock:
            until = max(self._failures.get(k, (0, 0.0))[1] for k in self._keys(address))
        return max(0.0, until - now)

    def record(self, address: str | None, ok: bool) -> None:
        now = self._clock()
        with self._lock:
            if ok:
                self._failures.pop(f"address:{address}", None)
                return
            for key in self._keys(address):
                count, until = self._failures.get(key, (0, 0.0))
                if now - until > FORGET_AFTER_S:
                    count = 0
                count += 1
                free = self.free_overall if key == OVERALL else self.free
                if count > free:
                    until = now + min(self.cap_s, 2.0 ** (count - free - 1))
                self._failures[key] = (count, max(until, now))

    @staticmethod
    def _keys(address: str | None) -> list[str]:
        return [OVERALL] + ([f"address:{address}"] if address else [])


OVERALL = "overall"
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
