"""Input checks and rate limits. Every refusal is a `Refused` with a message a person can act on."""

from __future__ import annotations

import re
import threading
import time
import unicodedata
from collections import defaultdict, deque
from collections.abc import Callable
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
    address_per_minute: int = 120  # all actions from one network address
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
    """Sliding one-minute windows per key. Not persisted: a restart forgives everyone."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def hit(self, key: str, per_minute: int, what: str) -> None:
        """Record one event for `key`, or raise Refused saying when to retry."""
        now = self._clock()
        with self._lock:
            events = self._events[key]
            while events and now - events[0] >= 60:
                events.popleft()
            if len(events) >= per_minute:
                wait = 60 - (now - events[0])
                raise Refused(
                    f"Too many {what} in a minute (limit {per_minute}); try again in {wait:.0f} s.",
                    retry_after_s=wait,
                )
            events.append(now)
