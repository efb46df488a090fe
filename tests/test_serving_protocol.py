"""The serving wing's one protocol: every engine offers all of `Generation` with its
signatures, and the in-process engine's batch of replies is the evaluator's own decoding."""

from __future__ import annotations

import inspect

import pytest

from crowd.config import ModelSettings
from crowd.models import ModelError
from crowd.serving.batching import decode_all
from crowd.serving.generation import GenerationService
from crowd.serving.protocol import BASE, Generation, Sampling
from crowd.serving.vllm_engine import VLLMGeneration
from crowd.serving.warmup import WarmingGeneration
from crowd.sim.poisoning_crowd import ScriptedReplies

CHATS = [
    [{"role": "user", "content": "Say something kind."}],
    [{"role": "user", "content": "What is the weather like on the moon today?"}],
    [{"role": "user", "content": "hi"}],
    [{"role": "user", "content": "Tell me about your day, at length."}],
]
HOT = Sampling(max_new_tokens=8, temperature=0.9, top_p=0.9)
MEMBERS = [name for name in vars(Generation) if not name.startswith("_")]


@pytest.fixture
def service(loaded):
    # No prefix cache: rows with the same prompt would then prefill differently from
    # `decode_all`'s, and sampled tokens could differ in the last bits of a logit.
    svc = GenerationService(loaded, ModelSettings(max_new_tokens=8, prefix_cache_tokens=0))
    yield svc
    svc.close()


def test_the_protocol_names_what_the_service_and_the_evaluator_use():
    assert {"adapters", "ready", "stream", "reply", "replies", "at_cap", "close"} <= set(MEMBERS)


def test_every_engine_offers_the_whole_protocol(service):
    engines = [
        service,
        VLLMGeneration(ModelSettings(vllm_url="http://127.0.0.1:9")),  # never called
        WarmingGeneration(lambda: service),
        ScriptedReplies(),
    ]
    for engine in engines:
        for name in MEMBERS:
            wanted = inspect.getattr_static(Generation, name)
            got = inspect.getattr_static(engine, name)  # no property runs
            if not callable(wanted):
                continue
            theirs = list(inspect.signature(got).parameters)
            ours = list(inspect.signature(wanted).parameters)
            assert theirs[: len(ours)] == ours, (type(engine).__name__, name)
    assert all(engine.ready for engine in engines[:2] + engines[3:])


def test_replies_in_process_are_the_evaluators_own_decoding(service):
    """Greedy rows decode inside the scheduler's running batch as `decode_all` decodes them;
    seeded sampled rows, one at a time, sample the same tokens; `progress` counts in order."""
    greedy = Sampling(max_new_tokens=8, temperature=0.0)
    told: list[tuple[int, int]] = []
    got = service.replies(
        CHATS, [BASE] * 4, greedy, max_batch=2, progress=lambda *n: told.append(n)
    )
    assert got == decode_all(service.loaded, CHATS, [BASE] * 4, greedy, max_batch=4)
    assert told == [(1, 4), (2, 4), (3, 4), (4, 4)]
    seeds = [11, 12, 13, 14]
    hot = service.replies(CHATS, [BASE] * 4, HOT, seeds, max_batch=1)
    assert hot == decode_all(service.loaded, CHATS, [BASE] * 4, HOT, seeds, max_batch=1)
    assert hot != service.replies(CHATS, [BASE] * 4, HOT, [21, 22, 23, 24], max_batch=1)


def test_a_batch_naming_an_unknown_adapter_is_refused_before_anything_decodes(service):
    with pytest.raises(ModelError, match="nope"):
        service.replies(CHATS, [BASE, "nope", BASE, BASE], HOT)
    assert service.rows_run == 0
    assert service.reply(CHATS[2], BASE, HOT)  # and the engine still serves


def test_at_cap_counts_the_engines_own_tokens(service):
    cut = "one two three four five six seven"  # at least 7 tokens: the cap of 8, less one
    assert len(service.loaded.tokenizer.encode(cut, add_special_tokens=False)) >= 7
    assert service.at_cap(cut)
    assert not service.at_cap("Hi.")
    warming = WarmingGeneration(lambda: service)
    assert warming.at_cap(cut) and not warming.at_cap("Hi.")
    assert warming.replies(CHATS[:2], [BASE] * 2, HOT, [1, 2]) == service.replies(
        CHATS[:2], [BASE] * 2, HOT, [1, 2]
    )
    remote = VLLMGeneration(ModelSettings(vllm_url="http://127.0.0.1:9"))
    assert not remote.at_cap(cut)  # no tokenizer on this side: a reply ends as it streamed
