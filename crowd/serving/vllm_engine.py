"""The scale-out engine: every reply from a vLLM OpenAI-compatible server with runtime LoRA.

    engine = VLLMGeneration(settings.model)   # CROWD_VLLM_URL
    engine.adapters.ensure("v7", path)          # POST /v1/load_lora_adapter, first use only
    for text_so_far in engine.stream(messages, adapter="v7"):
        ...

The server is the operator's (docs/deploy.md); the app only talks to it. It is a `Generation`
(crowd/serving/protocol.py), as the in-process `GenerationService` is, so the service
and the evaluator do not know which one serves them. Anything that goes wrong on the way (the
server down, slow, or having forgotten an adapter after a restart) ends as `ModelUnavailable`
before the caller stores anything; the next request tries again, so the app recovers when the
server does. A retired adapter is unloaded only after the last stream using it has ended, so
crowning a champion never cuts a reply short.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from crowd.config import ModelSettings
from crowd.models import ModelError, ModelUnavailable
from crowd.serving.adapters import AdapterSet, check_adapter_folder
from crowd.serving.protocol import BASE, Sampling


class VLLMAdapters(AdapterSet):
    """The group adapters this app loaded on the vLLM server, least recently used first."""

    def __init__(self, http: httpx.Client, keep: int = 8):
        super().__init__(threading.RLock(), keep)
        self._http = http

    def load(self, name: str, path: Path) -> None:
        """Load the adapter folder `path` as `name`, replacing a copy of that name the server
        may keep from an earlier run of the app."""
        check_adapter_folder(path)
        body = {"lora_name": name, "lora_path": str(Path(path).resolve()), "load_inplace": True}
        response = _call(self._http, "POST", "/v1/load_lora_adapter", body)
        if response.status_code != 200:
            raise ModelError(f"the vLLM server refused the adapter {path}: {_message(response)}")
        with self._lock:
            self.paths[name] = Path(path)
            self.in_use.revive(name)

    def unload(self, name: str) -> None:
        """Retire `name`: unloaded from the server now when idle, else after its last stream."""
        with self._lock:
            if name not in self.paths or not self.in_use.retire(name):
                return
            del self.paths[name]
        response = _call(self._http, "POST", "/v1/unload_lora_adapter", {"lora_name": name})
        if response.status_code not in (200, 404):  # 404: the server has forgotten it already
            raise ModelError(f"the vLLM server did not unload {name}: {_message(response)}")

    def release(self, name: str) -> None:
        if self.in_use.release(name):
            try:
                self.unload(name)
            except ModelError:
                pass  # the server is down: a restarted server does not have it anyway


class VLLMGeneration:
    """Replies streamed from a vLLM server; thread-safe (httpx's client pools connections)."""

    def __init__(self, settings: ModelSettings, url: str | None = None):
        self.settings = settings
        self.url = (url or settings.vllm_url or "").rstrip("/")
        # A server that sends nothing for vllm_timeout_s is as good as down.
        timeout = httpx.Timeout(settings.vllm_timeout_s, connect=3.0)
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        self.adapters = VLLMAdapters(self._http)
        self._base: str | None = None

    @property
    def ready(self) -> bool:
        """Always: the server is the operator's, and each request finds out whether it answers."""
        return True

    def default_sampling(self) -> Sampling:
        s = self.settings
        return Sampling(s.max_new_tokens, s.temperature, s.top_p)

    def at_cap(self, text: str) -> bool:
        """Never known here (no local tokenizer to count with): a reply ends as it streamed."""
        return False

    def base_model(self) -> str:
        """The server's base model name: the one listed without a parent adapter."""
        if self._base is None:
            response = _call(self._http, "GET", "/v1/models")
            models = response.json().get("data", []) if response.status_code == 200 else []
            bases = [m["id"] for m in models if not m.get("parent")]
            if not bases:
                raise ModelUnavailable()
            self._base = bases[0]
        return self._base

    def stream(
        self,
        chat: Sequence[dict],
        adapter: str = BASE,
        sampling: Sampling | None = None,
        seed: int | None = None,
    ) -> Iterator[str]:
        """Yield the reply's text so far after each streamed piece (the last value is the reply)."""
        self.adapters.hold(adapter)
        try:
            yield from self._stream(list(chat), adapter, sampling or self.default_sampling(), seed)
        finally:
            self.adapters.release(adapter)

    def reply(
        self,
        chat: Sequence[dict],
        adapter: str = BASE,
        sampling: Sampling | None = None,
        seed: int | None = None,
    ) -> str:
        text = ""
        for text in self.stream(chat, adapter, sampling, seed):  # noqa: B007
            pass
        return text.strip()

    def replies(
        self,
        chats: Sequence[Sequence[dict]],
        adapters: Sequence[str],
        sampling: Sampling,
        seeds: Sequence[int | None] | None = None,
        max_batch: int = 16,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[str]:
        """Whole replies to `chats` (row i with `adapters[i]`, `seeds[i]`), at most `max_batch`
        in flight: the evaluator's samples, batched by the server. `progress(rows done, rows)`
        as they arrive, in order."""
        seeds = list(seeds) if seeds is not None else [None] * len(chats)
        jobs = list(zip(chats, adapters, seeds, strict=True))
        out: list[str] = []
        with ThreadPoolExecutor(max_workers=max_batch) as pool:
            for text in pool.map(lambda job: self.reply(job[0], job[1], sampling, job[2]), jobs):
                out.append(text)
                if progress is not None:
                    progress(len(out), len(jobs))
        return out

    def close(self) -> None:
        self._http.close()

    def _stream(
        self, chat: list[dict], adapter: str, sampling: Sampling, seed: int | None
    ) -> Iterator[str]:
        body = {
            "model": self.base_model() if adapter == BASE else adapter,
            "messages": chat,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p if sampling.temperature > 0 else 1.0,
            "stream": True,
        }
        if seed is not None:
            body["seed"] = seed
        for attempt in range(2):
            try:
                with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
                    if response.status_code == 404 and adapter != BASE and attempt == 0:
                        self._reload(adapter)  # the server restarted and forgot it
                        continue
                    if response.status_code != 200:
                        raise ModelUnavailable()
                    yield from _texts(response)
                    return
            except httpx.HTTPError as exc:
                raise ModelUnavailable() from exc

    def _reload(self, adapter: str) -> None:
        path = self.adapters.paths.get(adapter)
        if path is None:
            raise ModelUnavailable()
        self.adapters.load(adapter, path)


def _texts(response: httpx.Response) -> Iterator[str]:
    """The text so far after each server-sent event of an OpenAI chat stream."""
    text = ""
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        event = json.loads(data)
        if "error" in event:
            raise ModelUnavailable()
        piece = (event.get("choices") or [{}])[0].get("delta", {}).get("content") or ""
        if piece:
            text += piece
            yield text
    raise ModelUnavailable()  # the stream ended without [DONE]: cut off


def _call(http: httpx.Client, method: str, path: str, body: dict | None = None) -> httpx.Response:
    try:
        return http.request(method, path, json=body)
    except httpx.HTTPError as exc:
        raise ModelUnavailable() from exc


def _message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
