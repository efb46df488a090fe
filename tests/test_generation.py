"""The generation service on the tiny model: mixed-adapter batches give the same replies as
one-at-a-time decoding, streaming yields growing text, broken adapters get clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from crowd.models import ModelError
from crowd.serving.generation import _Request, newest_texts
from crowd.serving.protocol import BASE, Sampling
from crowd.serving.static import generate_texts

GREEDY = Sampling(max_new_tokens=8, temperature=0.0)
CHATS = [
    [{"role": "user", "content": "Say something kind."}],
    [{"role": "user", "content": "What is the weather like on the moon today?"}],
    [{"role": "user", "content": "hi"}],
]


def make_adapter(base_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with random (non-zero) weights, so it changes the model's replies."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 2.0)  # strong enough to change greedy choices
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("adapters")
    return [make_adapter(tiny_model_dir, root / f"a{i}", seed=i) for i in range(2)]


@pytest.fixture
def service(new_generation):
    svc = new_generation(max_new_tokens=8, batch_window_ms=200, temperature=0.8)
    yield svc
    svc.close()


def test_mixed_adapter_batch_matches_one_at_a_time(service, adapters):
    service.adapters.load("a0", adapters[0])
    service.adapters.load("a1", adapters[1])
    names = ["a0", "a1", BASE]
    alone = [
        generate_texts(service.loaded, [chat], [name], GREEDY)[0]
        for chat, name in zip(CHATS, names)
    ]
    together = generate_texts(service.loaded, CHATS, names, GREEDY)
    assert together == alone
    # The adapters really change the replies, so the equality above says something.
    assert len({generate_texts(service.loaded, [CHATS[0]], [n], GREEDY)[0] for n in names}) > 1


def test_concurrent_requests_share_a_batch(service, adapters):
    service.adapters.load("a0", adapters[0])
    service.adapters.load("a1", adapters[1])
    results: dict[int, str] = {}

    def ask(i: int) -> None:
        results[i] = service.reply(CHATS[i % 3], ["a0", "a1"][i % 2], GREEDY)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6
    assert service.rows_run == 6 and service.batches_run < 6
    assert results[0] == service.reply(CHATS[0], "a0", GREEDY)


def test_stream_yields_growing_text_ending_in_the_reply(service):
    parts = list(service.stream(CHATS[0], BASE, GREEDY))
    assert parts, "the model produced no token"
    assert all(b.startswith(a) for a, b in zip(parts, parts[1:]))
    assert parts[-1].strip() == service.reply(CHATS[0], BASE, GREEDY)


def _request_with(texts_of: dict[int, str]) -> _Request:
    """A request whose tokens decode by `texts_of`, as the scheduler fills it."""
    return _Request(
        prompt=[],
        adapter=BASE,
        sampling=Sampling(),
        decode=lambda ids: "".join(texts_of[i] for i in ids),
    )


def test_a_reader_that_fell_behind_gets_only_the_newest_text():
    request = _request_with({1: "Hel", 2: "lo", 3: "!"})
    for token in (1, 2, 3):  # three tokens decoded before the reader looks
        request.tokens.append(token)
        request.push(token)
    request.close()
    assert list(newest_texts(request.out)) == ["Hello!"]


def test_a_reader_that_keeps_up_gets_every_text_and_then_the_error():
    request, read = _request_with({1: "Hel", 2: "lo"}), []
    texts = newest_texts(request.out)
    for token in (1, 2):
        request.tokens.append(token)
        request.push(token)
        read.append(next(texts))
    request.close(ModelError("the adapter is gone"))
    with pytest.raises(ModelError, match="adapter is gone"):
        next(texts)
    assert read == ["Hel", "Hello"]


@pytest.mark.parametrize("scheduler", ["continuous", "static"])
def test_an_idle_scheduler_thread_ends_and_the_next_request_starts_one(new_generation, scheduler):
    """The scheduler thread (and the torch thread pool it holds) ends when idle, so that it
    cannot slow other torch work (crowd/threads.py); a later request gets the same reply."""
    service = new_generation(
        idle_exit_s=0.2, max_new_tokens=8, batch_window_ms=10, scheduler=scheduler
    )
    try:
        assert not service.running
        first = service.reply(CHATS[0], BASE, GREEDY)
        assert service.running
        thread = service._thread
        deadline = time.monotonic() + 10
        while service.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not service.running and thread is not None
        thread.join(timeout=10)  # it says it is stopping just before it returns
        assert not thread.is_alive()
        assert service.reply(CHATS[0], BASE, GREEDY) == first
    finally:
        service.close()
    with pytest.raises(ModelError, match="stopped"):
        service.reply(CHATS[0], BASE, GREEDY)


def test_a_generation_service_shortens_the_gil_switch_interval(new_generation):
    """Rule 3 of crowd/threads.py: the scheduler takes the GIL back within 0.5 ms."""
    import sys

    from crowd.threads import SWITCH_INTERVAL_S

    sys.setswitchinterval(0.005)
    new_generation().close()
    assert SWITCH_INTERVAL_S < 0.005
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)


def test_unknown_adapter_is_refused(service):
    with pytest.raises(ModelError, match="no adapter named 'nope'"):
        list(service.stream(CHATS[0], "nope", GREEDY))


def test_corrupt_adapter_file_is_named(service, adapters, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text((adapters[0] / "adapter_config.json").read_text())
    (broken / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelError, match="corrupt"):
        service.adapters.load("broken", broken)
    assert "broken" not in service.adapters.names
    with pytest.raises(ModelError, match="no adapter_config.json"):
        service.adapters.load("empty", tmp_path)


def test_eight_adapters_share_one_base(service, adapters, tiny_model_dir):
    base_params = sum(p.numel() for p in service.loaded.model.parameters())
    for i in range(8):
        service.adapters.load(f"g{i}", adapters[i % 2])
    with_adapters = sum(p.numel() for p in service.loaded.model.parameters())
    lora = with_adapters - base_params
    assert 0 < lora < 0.2 * base_params  # adapters, not copies of the base
    assert service.reply(CHATS[0], "g7", GREEDY) == service.reply(CHATS[0], "g1", GREEDY)


def test_ensure_keeps_only_the_most_recent_adapters(service, adapters):
    service.adapters.keep = 2
    for i in range(4):
        assert service.adapters.ensure(f"v{i}", adapters[i % 2]) == f"v{i}"
    service.adapters.ensure("v2", adapters[0])  # used again: now the most recent
    service.adapters.ensure("v4", adapters[0])
    assert service.adapters.names == ["v2", "v4"]
    assert service.adapters.ensure("base", None) == BASE


@pytest.mark.parametrize(
    ("chosen", "spin"),
    [(None, "GOMP_SPINCOUNT = '10000'"), ("ACTIVE", "OMP_WAIT_POLICY = 'ACTIVE'")],
)
def test_importing_crowd_shortens_the_torch_threads_spin(chosen, spin):
    """crowd/__init__.py sets GOMP_SPINCOUNT=10000 before torch loads, so libgomp's idle
    threads soon sleep instead of spinning 300000 times (docs/results/serving.md: 4x faster
    replies beside a busy core); a policy the environment chose is kept. libgomp prints what it
    uses (OMP_DISPLAY_ENV), so this checks the thread pool itself, not our variable."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if chosen:
        env["OMP_WAIT_POLICY"] = chosen
    out = subprocess.run(
        [sys.executable, "-c", "import crowd, torch; torch.ones(10**6).sum()"],
        env={**env, "OMP_DISPLAY_ENV": "verbose"},
        capture_output=True,
        text=True,
        check=True,
    )
    if "OPENMP DISPLAY ENVIRONMENT" not in out.stderr:
        pytest.skip("this torch's thread pool is not libgomp")
    assert spin in out.stderr
