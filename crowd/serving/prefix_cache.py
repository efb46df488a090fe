"""Prefix caching: the KV cache of a conversation's last reply, kept so that the conversation's
next message prefills only what is new.

A volunteer's every message sends the whole conversation again; without this, each message
re-reads its whole history (hundreds of tokens) before the first new token, and in a running
batch that prefill stalls every other row. When a row finishes, its keys and values (prompt and
reply, as fed to the model) are kept under its adapter's name. A new request with the same
adapter whose prompt starts with the same tokens takes the longest such prefix and prefills the
rest. Reusing a prefix computes the same attention over the same keys, so greedy replies stay
the same (tested).

Entries are keyed by adapter name: loading new weights under a name, or unloading it, forgets
that name's entries (`forget`, called by the adapter registry). The cache holds at most
`max_tokens` tokens, least recently used out first; about 46 KB a token for the default model
(30 layers, 3 key-value heads of 64 floats).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

MIN_PREFIX = 16
"""A shorter shared prefix is not worth a separate prefill pass: the row joins the others'."""


@dataclass
class Entry:
    adapter: str
    ids: list[int]  # the tokens whose keys and values `layers` holds, in order
    layers: list[tuple[Any, Any]]  # per layer: keys and values, [1, heads, len(ids), dim]


class PrefixCache:
    """Finished rows' KV caches by adapter, at most `max_tokens` tokens (0: off). Not
    thread-safe: the generation scheduler uses it under the model's lock."""

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens
        self._entries: OrderedDict[int, Entry] = OrderedDict()  # least recently used first
        self._next = 0
        self.tokens = 0
        self.hits = 0
        self.reused = 0  # prompt tokens not prefilled again, over all hits

    def put(self, adapter: str, ids: list[int], layers: list[tuple[Any, Any]]) -> None:
        """Keep a finished row's cache; an entry it extends (the same conversation's previous
        turn) goes."""
        if len(ids) < MIN_PREFIX or len(ids) > self.max_tokens:
            return
        for key, entry in list(self._entries.items()):
            if entry.adapter == adapter and ids[: len(entry.ids)] == entry.ids:
                self._drop(key)
        self._entries[self._next] = Entry(adapter, list(ids), layers)
        self._next += 1
        self.tokens += len(ids)
        while self.tokens > self.max_tokens:
            self._drop(next(iter(self._entries)))

    def take(self, adapter: str, prompt: list[int]) -> tuple[int, list[tuple[Any, Any]]] | None:
        """The longest cached prefix of `prompt` under `adapter` (leaving at least its last
        token to prefill) and its keys and values, or None when none reaches MIN_PREFIX."""
        best, best_key = 0, None
        for key, entry in self._entries.items():
            if entry.adapter == adapter:
                n = _common(entry.ids, prompt, len(prompt) - 1)
                if n > best:
                    best, best_key = n, key
        if best_key is None or best < MIN_PREFIX:
            return None
        self._entries.move_to_end(best_key)
        self.hits += 1
        self.reused += best
        layers = self._entries[best_key].layers
        return best, [(k[:, :, :best], v[:, :, :best]) for k, v in layers]

    def forget(self, adapter: str) -> None:
        """Drop every entry of `adapter` (its weights changed or went)."""
        for key in [k for k, e in self._entries.items() if e.adapter == adapter]:
            self._drop(key)

    def _drop(self, key: int) -> None:
        self.tokens -= len(self._entries.pop(key).ids)


def _common(a: list[int], b: list[int], limit: int) -> int:
    """The length of the common prefix of `a` and `b`, at most `limit`."""
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
