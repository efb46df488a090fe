"""Every reply is generated here: one scheduler thread batches concurrent requests, for any
mix of groups, into one forward pass per token (peft mixed-adapter batches), and streams text.

    service = GenerationService(loaded, settings.model)
    service.adapters.load("v7", path)                 # a group's LoRA adapter
    for text_so_far in service.stream(messages, adapter="v7"):
        ...

Requests that arrive while a batch is decoding wait for the next batch; the scheduler waits
`batch_window_ms` after the first request so that concurrent requests share a pass.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crowd.config import ModelSettings
from crowd.models import LoadedModel, ModelError

BASE = "__base__"
"""peft's name for 'no adapter' inside a mixed-adapter batch."""

_DONE = object()


@dataclass(frozen=True)
class Sampling:
    """Decoding settings shared by a batch. temperature 0 means greedy."""

    max_new_tokens: int = 96
    temperature: float = 0.8
    top_p: float = 0.95


class AdapterRegistry:
    """The LoRA adapters on the one shared base model, by name. Loading an adapter never copies
    the base: the first load wraps the base in a PeftModel, later ones add a few MB each."""

    def __init__(self, loaded: LoadedModel, lock: threading.Lock, keep: int = 8):
        self._loaded = loaded
        self._lock = lock  # held by the scheduler while it decodes
        self.keep = keep  # `ensure` unloads the least recently used beyond this many
        self.paths: dict[str, Path] = {}  # insertion order = least recently used first

    @property
    def names(self) -> list[str]:
        return list(self.paths)

    def load(self, name: str, path: Path) -> None:
        """Load the adapter folder at `path` as `name` (reloading if the name exists)."""
        from peft import PeftModel

        _check_adapter_folder(path)
        with self._lock:
            model = self._loaded.model
            try:
                if not isinstance(model, PeftModel):
                    model = PeftModel.from_pretrained(
                        model, str(path), adapter_name=name, is_trainable=False
                    )
                    self._loaded.model = model.eval()
                else:
                    if name in model.peft_config:
                        model.delete_adapter(name)
                    model.load_adapter(str(path), adapter_name=name, is_trainable=False)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                raise ModelError(f"cannot load the adapter {path}: {exc}") from exc
            self.paths[name] = Path(path)

    def ensure(self, name: str, path: Path | None) -> str:
        """Load `path` as `name` unless already loaded; None means the bare base."""
        if path is None:
            return BASE
        if name in self.paths:
            self.paths[name] = self.paths.pop(name)  # most recently used
        else:
            for stale in list(self.paths)[: max(0, len(self.paths) - self.keep + 1)]:
                self.unload(stale)  # champions of past rounds: a few MB each
            self.load(name, path)
        return name

    def unload(self, name: str) -> None:
        with self._lock:
            if name in self.paths:
                self._loaded.model.delete_adapter(name)
                del self.paths[name]

    def save(self, name: str, out_dir: Path) -> Path:
        """Write adapter `name` to `out_dir` (PEFT format)."""
        with self._lock:
            self._loaded.model.save_pretrained(str(out_dir), selected_adapters=[name])
        return out_dir / name if name != "default" else out_dir


def _check_adapter_folder(path: Path) -> None:
    """A clear message for the usual ways an adapter folder is broken."""
    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise ModelError(f"the adapter {path} has no adapter_config.json")
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        raise ModelError(f"the adapter {path} has no adapter_model.safetensors")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"the adapter {weights} is corrupt: {exc}") from exc


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


@dataclass
class _Request:
    chat: list[dict]
    adapter: str
    sampling: Sampling
    out: queue.Queue = field(default_factory=queue.Queue)
    tokens: list[int] = field(default_factory=list)
    finished: bool = False
    submitted: float = field(default_factory=time.perf_counter)


class _BatchStreamer:
    """A transformers streamer for a whole batch: routes each row's new token to its request
    and pushes the decoded text so far. Rows stop at EOS or their own token budget."""

    def __init__(self, requests: list[_Request], tokenizer: Any):
        self.requests = requests
        self.tokenizer = tokenizer
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
                self._finish(request)
                continue
            request.tokens.append(token)
            text = self.tokenizer.decode(request.tokens, skip_special_tokens=True)
            if not text.endswith("\ufffd"):  # hold back a half-decoded multi-byte character
                request.out.put(text)
            if len(request.tokens) >= request.sampling.max_new_tokens:
                self._finish(request)

    def end(self) -> None:
        for request in self.requests:
            self._finish(request)

    def _finish(self, request: _Request) -> None:
        if not request.finished:
            request.finished = True
            request.out.put(_DONE)


class GenerationService:
    """The one generation scheduler of a process. Thread-safe; `stream` blocks its caller only."""

    def __init__(self, loaded: LoadedModel, settings: ModelSettings):
        self.loaded = loaded
        self.settings = settings
        self._lock = threading.Lock()
        self.adapters = AdapterRegistry(loaded, self._lock)
        self._pending: queue.Queue[_Request] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="generation", daemon=True)
        self._thread.start()
        self.batches_run = 0
        self.rows_run = 0

    def default_sampling(self) -> Sampling:
        s = self.settings
        return Sampling(s.max_new_tokens, s.temperature, s.top_p)

    def stream(
        self, chat: Sequence[dict], adapter: str = BASE, sampling: Sampling | None = None
    ) -> Iterator[str]:
        """Yield the reply's text so far after each new token (the last value is the reply)."""
        request = _Request(list(chat), adapter, sampling or self.default_sampling())
        if adapter != BASE and adapter not in self.adapters.paths:
            raise ModelError(f"no adapter named {adapter!r} is loaded")
        self._pending.put(request)
        while (item := request.out.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item

    def reply(
        self, chat: Sequence[dict], adapter: str = BASE, sampling: Sampling | None = None
    ) -> str:
        """The whole reply, for callers that do not stream."""
        text = ""
        for text in self.stream(chat, adapter, sampling):  # noqa: B007 (keeps the last)
            pass
        return text.strip()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._pending.get(timeout=0.1)
            except queue.Empty:
                continue
            for batch in self._collect(first):
                self._decode(batch)

    def _collect(self, first: _Request) -> list[list[_Request]]:
        """Wait a moment for company, then split by sampling settings into batches."""
        deadline = time.perf_counter() + self.settings.batch_window_ms / 1000
        requests = [first]
        while len(requests) < self.settings.max_batch:
            try:
                requests.append(self._pending.get(timeout=max(0.0, deadline - time.perf_counter())))
            except queue.Empty:
                break
        by_sampling: dict[tuple, list[_Request]] = {}
        for request in requests:
            key = (request.sampling.temperature, request.sampling.top_p)
            by_sampling.setdefault(key, []).append(request)
        return list(by_sampling.values())

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
                if not request.finished:
                    request.finished = True
                    request.out.put(exc)
        finally:
            streamer.end()
