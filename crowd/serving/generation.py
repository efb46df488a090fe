"""Every reply is generated here: one scheduler thread decodes concurrent requests, for any mix
of groups, in one forward pass per token (peft mixed-adapter batches), and streams text.

    service = GenerationService(loaded, settings.model)
    service.adapters.load("v7", path)                 # a group's LoRA adapter
    for text_so_far in service.stream(messages, adapter="v7"):
        ...

Two schedulers (`CROWD_SCHEDULER`):
- `continuous` (the default): a request joins the running batch at the next decoding step and
  leaves it the step it ends (requests that wait are prefilled before the next step); each
  row keeps its own adapter, sampling settings and budget (crowd/serving/batching.py). An idle
  scheduler waits `batch_window_ms` for company. bench/serve.py (8 requests over 4 groups,
  quiet machine) measured it at 3.9x one at a time, static 3.7x (docs/results/serving.md).
- `static`: the first request waits `batch_window_ms` for company, then the batch decodes to
  its longest row with `model.generate` (crowd/serving/static.py); a request that arrives
  meanwhile waits for the whole batch. The benchmarks' baseline.

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

from crowd.config import ModelSettings
from crowd.models import LoadedModel, ModelError
from crowd.serving.adapters import AdapterRegistry
from crowd.serving.batching import Row, RunningBatch, prompt_ids
from crowd.serving.prefix_cache import PrefixCache
from crowd.serving.protocol import BASE, Progress, Sampling
from crowd.serving.static import BatchStreamer, generate_texts
from crowd.threads import share_the_gil

_DONE = object()
IDLE_EXIT_S = 2.0
"""Seconds a scheduler thread waits without work before it ends."""


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


def whole(texts: Iterator[str]) -> str:
    """The last of a stream's texts so far (the whole reply), stripped."""
    text = ""
    for text in texts:  # noqa: B007
        pass
    return text.strip()


@dataclass(eq=False)
class _Request(Row):
    """A row that streams its text so far to the caller's queue; `release` runs once at the end."""

    chat: list[dict] = field(default_factory=list)
    decode: Callable[[list[int]], str] | None = None
    out: queue.Queue = field(default_factory=queue.Queue)
    release: Callable[[], None] | None = None

    def push(self, token: int) -> None:
        assert self.decode is not None  # every request is made with its tokenizer's decode
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

    @property
    def ready(self) -> bool:
        """Always: this engine is built once its model is loaded (crowd.serving.warmup waits)."""
        return True

    def stream(
        self, chat: Sequence[dict], adapter: str = BASE, sampling: Sampling | None = None
    ) -> Iterator[str]:
        """Yield the reply's text so far after each new token (the last value is the reply)."""
        request = self._request(chat, adapter, sampling or self.default_sampling())
        self._submit(request)
        try:
            yield from newest_texts(request.out)
        finally:
            request.cancelled = True  # a caller that stops reading frees its row

    def replies(
        self,
        chats: Sequence[Sequence[dict]],
        adapters: Sequence[str],
        sampling: Sampling,
        seeds: Sequence[int | None] | None = None,
        max_batch: int = 16,
        progress: Progress | None = None,
    ) -> list[str]:
        """Whole replies to `chats` (row i with `adapters[i]`, `seeds[i]`), at most `max_batch`
        waiting or decoding at a time beside the chats. A seed holds under the continuous
        scheduler (the static one samples with `model.generate`, unseeded)."""
        seeds = list(seeds) if seeds is not None else [None] * len(chats)
        rows = zip(chats, adapters, seeds, strict=True)
        requests = [self._request(chat, name, sampling, seed) for chat, name, seed in rows]
        later = iter(requests[max_batch:])
        texts: list[str] = []
        try:
            for request in requests[:max_batch]:
                self._submit(request)
            for request in requests:
                texts.append(whole(newest_texts(request.out)))
                if (following := next(later, None)) is not None:
                    self._submit(following)
                if progress is not None:
                    progress(len(texts), len(requests))
        finally:
            for request in requests:
                request.cancelled = True  # an error ends the rows still decoding
        return texts

    def at_cap(self, text: str) -> bool:
        """Counted with the model's tokenizer; re-encoding a reply can differ from the sampled
        tokens by one."""
        tokens = self.loaded.tokenizer.encode(text, add_special_tokens=False)
        return len(tokens) >= self.settings.max_new_tokens - 1

    def _request(
        self, chat: Sequence[dict], adapter: str, sampling: Sampling, seed: int | None = None
    ) -> _Request:
        if adapter != BASE and adapter not in self.adapters.paths:
            raise ModelError(f"no adapter named {adapter!r} is loaded")
        tokenizer = self.loaded.tokenizer
        return _Request(
            prompt=prompt_ids(tokenizer, chat) if self.continuous else [],
            adapter=adapter,
            sampling=sampling,
            seed=seed,
            chat=list(chat),
            decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
        )

    def reply(
        self, chat: Sequence[dict], adapter: str = BASE, sampling: Sampling | None = None
    ) -> str:
        """The whole reply, for callers that do not stream."""
        return whole(self.stream(chat, adapter, sampling))

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
        streamer = BatchStreamer(batch, self.loaded.tokenizer)
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
