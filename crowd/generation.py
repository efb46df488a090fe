"""Every reply is generated here: one scheduler thread decodes concurrent requests, for any mix
of groups, in one forward pass per token (peft mixed-adapter batches), and streams text.

    service = GenerationService(loaded, settings.model)
    service.adapters.load("v7", path)                 # a group's LoRA adapter
    for text_so_far in service.stream(messages, adapter="v7"):
        ...

Two schedulers (`CROWD_SCHEDULER`):
- `continuous` (the default): a request joins the running batch at the next decoding step and
  leaves it the step it ends (requests that wait are prefilled before the next step); each
  row keeps its own adapter, sampling settings and budget (crowd/batching.py). An idle
  scheduler waits `batch_window_ms` for company. bench/serve.py (8 requests over 4 groups,
  quiet machine) measured it at 3.9x one at a time, static 3.7x (docs/results/serving.md).
- `static`: the first request waits `batch_window_ms` for company, then the batch decodes to
  its longest row with `model.generate`; a request that arrives meanwhile waits for the whole
  batch. The benchmarks' baseline.

The scheduler thread ends after `IDLE_EXIT_S` without work and the next request starts a new
one: its torch thread pool goes with it, so a round that trains while nobody chats is not slowed
by an idle pool (crowd/threads.py, rule 1).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from crowd.adapters import AdapterRegistry
from crowd.batching import BASE, Row, RunningBatch, Sampling, prompt_ids
from crowd.config import ModelSettings
from crowd.models import LoadedModel, ModelError
from crowd.prefix_cache import PrefixCache
from crowd.threads import share_the_gil

__all__ = ["BASE", "GenerationService", "Sampling", "encode_chats", "generate_texts"]

_DONE = object()
IDLE_EXIT_S = 2.0
"""Seconds a scheduler thread waits without work before it ends."""


def encode_chats(tokenizer: Any, chats: Sequence[Sequence[dict]], device: str) -> dict:
    """Left-padded input ids and attention mask for a batch of chats, ready to generate."""
    texts = [
        tokenizer.apply_chat_template(list(chat), tokenize=False, add_generation_prompt=True)
        for chat in chats
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return {key: value.to(device) for key, value in batch.items()}


def generate_texts(
    loaded: LoadedModel,
    chats: Sequence[Sequence[dict]],
    adapters: Sequence[str],
    sampling: Sampling,
    streamer: Any = None,
) -> list[str]:
    """Replies to `chats`, row i decoded with adapter `adapters[i]`, in one batched generate."""
    import torch

    tokenizer = loaded.tokenizer
    batch = encode_chats(tokenizer, chats, loaded.device)
    kwargs: dict[str, Any] = dict(
        max_new_tokens=sampling.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        streamer=streamer,
    )
    if sampling.temperature > 0:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if _is_peft(loaded.model):
        kwargs["adapter_names"] = list(adapters)
    elif any(name != BASE for name in adapters):
        raise ModelError(f"adapters {sorted(set(adapters))} are not loaded")
    with torch.inference_mode():
        out = loaded.model.generate(**batch, **kwargs)
    new_tokens = out[:, batch["input_ids"].shape[1] :]
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new_tokens]


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def newest_texts(out: queue.Queue) -> Iterator[str]:
    """The texts a request's queue receives until its end, raising the error that ended it.
    Each text is the whole reply so far, so a reader that fell behind gets only the newest of
    those waiting: under load, the web server then sends one update where it would send several,
    and every stream's next update (a new reply's first token too) leaves sooner."""
    item = out.get()
    while item is not _DONE:
        if isinstance(item, BaseException):
            raise item
        try:
            newer = out.get_nowait()
        except queue.Empty:  # nothing newer yet: this text, then wait for the next
            yield item
            item = out.get()
            continue
        if not isinstance(newer, str):  # the end or an error: the last text goes out first
            yield item
        item = newer


@dataclass(eq=False)
class _Request(Row):
    """A row that streams its text so far to the caller's queue; `release` runs once at the end."""

    chat: list[dict] = field(default_factory=list)
    decode: Callable[[list[int]], str] | None = None
    out: queue.Queue = field(default_factory=queue.Queue)
    release: Callable[[], None] | None = None

    def push(self, token: int) -> None:
        text = self.decode(self.tokens)
        if not text.endswith("\ufffd"):  # hold back a half-decoded multi-byte character
            self.out.put(text)

    def close(self, error: BaseException | None = None) -> None:
        if self.finished:
            return
        super().close(error)
        if self.release is not None:
            self.release()
        self.out.put(error if error is not None else _DONE)


class _BatchStreamer:
    """The static scheduler's transformers streamer for a whole batch: routes each row's new
    token to its request. Rows stop at EOS or their own token budget."""

    def __init__(self, requests: list[_Request], tokenizer: Any):
        self.requests = requests
        self.stop_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first pushes the prompt
            self._prompt_seen = True
            return
        for request, token in zip(self.requests, value.reshape(-1).tolist()):
            if request.finished:
                continue
            if token in self.stop_ids:
                request.close()
                continue
            request.tokens.append(token)
            request.push(token)
            if len(request.tokens) >= request.sampling.max_new_tokens:
                request.close()

    def end(self) -> None:
        for request in self.requests:
            request.close()


class GenerationService:
    """The one generation scheduler of a process. Thread-safe; `stream` blocks its caller only."""

    def __init__(
        self, loaded: LoadedModel, settings: ModelSettings, idle_exit_s: float = IDLE_EXIT_S
    ):
        self.loaded = loaded
        self.settings = settings
        share_the_gil()  # the web server's threads would otherwise stall every decoding step
        self.continuous = settings.scheduler == "continuous"
        self.idle_exit_s = idle_exit_s
        self._lock = threading.RLock()  # the model: one decoding step or adapter change at a time
        self.prefixes = PrefixCache(settings.prefix_cache_tokens)  # continuous only
        self.adapters = AdapterRegistry(loaded, self._lock, changed=self.prefixes.forget)
        self._pending: queue.Queue[_Request] = queue.Queue()
        self._stop = threading.Event()
        # continuous: the rows, kept across scheduler threads
        self._batch = RunningBatch(loaded, self.prefixes)
        self._starting = threading.Lock()  # a request is queued and a thread started, or neither
        self._thread: threading.Thread | None = None
        self.batches_run = 0  # static: generate calls; continuous: prefills (admissions)
        self.rows_run = 0
        self.steps_run = 0  # continuous: decoding steps

    @property
    def running(self) -> bool:
        """Whether a scheduler thread is alive (it ends after `idle_exit_s` without work)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def default_sampling(self) -> Sampling:
        s = self.settings
        return Sampling(s.max_new_tokens, s.temperature, s.top_p)

    def stream(
        self, chat: Sequence[dict], adapter: str = BASE, sampling: Sampling | None = None
    ) -> Iterator[str]:
        """Yield the reply's text so far after each new token (the last value is the reply)."""
        if adapter != BASE and adapter not in self.adapters.paths:
            raise ModelError(f"no adapter named {adapter!r} is loaded")
        tokenizer = self.loaded.tokenizer
        request = _Request(
            prompt=prompt_ids(tokenizer, chat) if self.continuous else [],
            adapter=adapter,
            sampling=sampling or self.default_sampling(),
            chat=list(chat),
            decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
        )
        self._submit(request)
        try:
            yield from newest_texts(request.out)
        finally:
            request.cancelled = True  # a caller that stops reading frees its row

    def reply(
        self, chat: Sequence[dict], adapter: str = BASE, sampling: Sampling | None = None
    ) -> str:
        """The whole reply, for callers that do not stream."""
        text = ""
        for text in self.stream(chat, adapter, sampling):  # noqa: B007
            pass
        return text.strip()

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
            self._thread = None
        for request in self._drain(self._pending.qsize()):  # nobody will decode them now
            request.close(ModelError("the generation service stopped"))

    def _submit(self, request: _Request) -> None:
        """Queue `request`, and start a scheduler thread if none is alive."""
        with self._starting:
            if self._stop.is_set():
                raise ModelError("the generation service stopped")
            self._pending.put(request)
            if self._thread is None:
                run = self._run_continuous if self.continuous else self._run_static
                self._thread = threading.Thread(target=run, name="generation", daemon=True)
                self._thread.start()

    def _may_end(self, idle_since: float) -> bool:
        """True when the scheduler thread, idle since `idle_since`, should end now: nothing
        waits and it has been idle `idle_exit_s`. Decided under the lock `_submit` holds."""
        if time.monotonic() - idle_since < self.idle_exit_s:
            return False
        with self._starting:
            if self._pending.empty():
                self._thread = None
                return True
        return False

    # -- continuous ----------------------------------------------------------------------------

    def _run_continuous(self) -> None:
        batch, idle_since = self._batch, time.monotonic()
        while not self._stop.is_set():
            room = self.settings.max_batch - len(batch.rows)
            arrivals = self._arrivals(idle=not batch.rows, room=room)
            if not arrivals and not batch.rows:
                if self._may_end(idle_since):
                    return
                continue
            with self._lock:
                if arrivals:  # prefill first: whatever came meanwhile is admitted before a step
                    self._admit(batch, arrivals)
                else:
                    batch.step()
            self.batches_run, self.steps_run = batch.prefills, batch.steps
            idle_since = time.monotonic()
        batch.fail(ModelError("the generation service stopped"))

    def _arrivals(self, idle: bool, room: int) -> list[_Request]:
        """What waits now, at most `room`; an idle scheduler waits for a first request and
        then `batch_window_ms` for company."""
        if room <= 0:
            return []
        if not idle:
            return self._drain(room)
        try:
            first = self._pending.get(timeout=0.1)
        except queue.Empty:
            return []
        return [first] + self._gather(room - 1)

    def _drain(self, room: int) -> list[_Request]:
        taken: list[_Request] = []
        while len(taken) < room:
            try:
                taken.append(self._pending.get_nowait())
            except queue.Empty:
                break
        return taken

    def _gather(self, room: int) -> list[_Request]:
        """Up to `room` more requests, waiting at most `batch_window_ms` for them."""
        deadline = time.perf_counter() + self.settings.batch_window_ms / 1000
        taken: list[_Request] = []
        while len(taken) < room:
            try:
                taken.append(self._pending.get(timeout=max(0.0, deadline - time.perf_counter())))
            except queue.Empty:
                break
        return taken

    def _admit(self, batch: RunningBatch, arrivals: list[_Request]) -> None:
        """Rows whose adapter is still loaded join the batch; the others get the error."""
        ready = []
        for request in arrivals:
            try:
                self.adapters.hold(request.adapter)
            except ModelError as exc:
                request.close(exc)
                continue
            request.release = partial(self.adapters.release, request.adapter)
            ready.append(request)
        self.rows_run += len(ready)
        if ready:
            batch.admit(ready)

    # -- static --------------------------------------------------------------------------------

    def _run_static(self) -> None:
        idle_since = time.monotonic()
        while not self._stop.is_set():
            try:
                first = self._pending.get(timeout=0.1)
            except queue.Empty:
                if self._may_end(idle_since):
                    return
                continue
            requests = [first] + self._gather(self.settings.max_batch - 1)
            by_sampling: dict[tuple, list[_Request]] = {}
            for request in requests:
                key = (request.sampling.temperature, request.sampling.top_p)
                by_sampling.setdefault(key, []).append(request)
            for batch in by_sampling.values():
                self._decode(batch)
            idle_since = time.monotonic()

    def _decode(self, batch: list[_Request]) -> None:
        budget = max(r.sampling.max_new_tokens for r in batch)
        sampling = Sampling(budget, batch[0].sampling.temperature, batch[0].sampling.top_p)
        streamer = _BatchStreamer(batch, self.loaded.tokenizer)
        self.batches_run += 1
        self.rows_run += len(batch)
        try:
            with self._lock:
                generate_texts(
                    self.loaded,
                    [r.chat for r in batch],
                    [r.adapter for r in batch],
                    sampling,
                    streamer,
                )
        except Exception as exc:  # the error goes to every waiting caller, the thread lives on
            for request in batch:
                request.close(exc)
        finally:
            streamer.end()
