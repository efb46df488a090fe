"""What a generation engine offers, whichever engine it is: the in-process scheduler
(`crowd.serving.generation.GenerationService`), a vLLM server
(`crowd.serving.vllm_engine.VLLMGeneration`), or the stand-in while the first one loads
(`crowd.serving.warmup.WarmingGeneration`). The service, the evaluator and the app depend on this
module and on no engine, so none of them knows which engine serves it.

    engine.adapters.ensure("v7", path)                   # a group's LoRA adapter, on first use
    for text_so_far in engine.stream(chat, adapter="v7"):
        ...
    text = end_cleanly(text, cut=engine.at_cap(text))   # crowd.serving.trimming

Light on purpose (nothing of crowd's, no torch): the service imports it, and the service's
importers should not pay for a model they do not use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

BASE = "__base__"
"""The adapter name of the bare base model (peft's name for 'no adapter' inside a mixed-adapter
batch), on every engine."""

Progress = Callable[[int, int], None]
"""Told (replies done, replies) as a batch of replies comes in."""


@dataclass(frozen=True)
class Sampling:
    """How one request decodes. temperature 0 means greedy."""

    max_new_tokens: int = 96
    temperature: float = 0.8
    top_p: float = 0.95


class Adapters(Protocol):
    """The groups' adapters an engine has loaded, by name (`crowd.serving.adapters.AdapterSet`
    is the implementation both engines share)."""

    @property
    def names(self) -> list[str]: ...

    def ensure(self, name: str, path: Path | None) -> str:
        """Load `path` as `name` unless already loaded; None means the bare base (BASE)."""
        ...

    def load(self, name: str, path: Path) -> None:
        """Load the adapter folder `path` as `name`, replacing weights of that name."""
        ...

    def unload(self, name: str) -> None:
        """Retire `name`: now when no reply uses it, else when the last one ends."""
        ...


class Generation(Protocol):
    """A generation engine. Thread-safe: replies stream to many callers at once. An engine that
    cannot answer raises `crowd.models.ModelError` (`ModelUnavailable` when a retry may work)
    before its first text, and nothing has been stored then."""

    @property
    def adapters(self) -> Adapters: ...

    @property
    def ready(self) -> bool:
        """Whether it serves now (a model still loading in the background does not)."""
        ...

    def default_sampling(self) -> Sampling:
        """The operator's settings (CROWD_MAX_NEW_TOKENS, CROWD_TEMPERATURE, CROWD_TOP_P)."""
        ...

    def stream(
        self, chat: Sequence[dict], adapter: str = BASE, sampling: Sampling | None = None
    ) -> Iterator[str]:
        """The reply's text so far after each new piece; the last value is the reply."""
        ...

    def reply(
        self, chat: Sequence[dict], adapter: str = BASE, sampling: Sampling | None = None
    ) -> str:
        """The whole reply, for callers that do not stream."""
        ...

    def replies(
        self,
        chats: Sequence[Sequence[dict]],
        adapters: Sequence[str],
        sampling: Sampling,
        seeds: Sequence[int | None] | None = None,
        max_batch: int = 16,
        progress: Progress | None = None,
    ) -> list[str]:
        """Whole replies to `chats`, row i with adapter `adapters[i]` and seed `seeds[i]` (a row
        with a seed samples the same text in any batch), at most `max_batch` at a time: the
        evaluator's samples. `progress(replies done, replies)` as they come in."""
        ...

    def at_cap(self, text: str) -> bool:
        """Whether `text`, a reply at the default sampling, stopped at the token cap rather
        than ending on its own (crowd.serving.trimming then ends it at a sentence)."""
        ...

    def close(self) -> None:
        """Stop serving; requests still waiting get a ModelError."""
        ...
