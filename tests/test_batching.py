"""Continuous batching on the tiny model: rows that join a running batch at any step, with mixed
adapters, give the same greedy tokens as one-at-a-time decoding; a late short request finishes
while an early long one is still decoding (and waits for it under the static scheduler);
finished rows leave at once; each row keeps its own sampling; a retired adapter stays until its
last reply ends."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from test_generation import CHATS, make_adapter

from crowd.models import ModelError
from crowd.serving.batching import Row, RunningBatch, decode_all, prompt_ids
from crowd.serving.generation import GenerationService
from crowd.serving.protocol import BASE, Sampling
from crowd.serving.static import generate_texts

GREEDY = Sampling(max_new_tokens=10, temperature=0.0)
MORE_CHATS = CHATS + [
    [{"role": "user", "content": "Tell me a long story about a lighthouse keeper and a gull."}],
    [{"role": "user", "content": "ok"}],
]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("adapters")
    return [make_adapter(tiny_model_dir, root / f"a{i}", seed=i) for i in range(2)]


@pytest.fixture
def service(adapters, request, new_generation):
    scheduler = getattr(request, "param", "continuous")
    svc = new_generation(max_new_tokens=10, scheduler=scheduler, temperature=0.8)
    svc.adapters.load("a0", adapters[0])
    svc.adapters.load("a1", adapters[1])
    yield svc
    svc.close()


def alone(service: GenerationService, chat: list[dict], adapter: str, sampling: Sampling) -> str:
    """One row on its own through transformers' generate: the reference."""
    return generate_texts(service.loaded, [chat], [adapter], sampling)[0]


def test_rows_joining_at_different_steps_match_one_at_a_time(service):
    names = ["a0", "a1", BASE, "a1", "a0"]
    rows = [
        Row(prompt_ids(service.loaded.tokenizer, chat), name, GREEDY)
        for chat, name in zip(MORE_CHATS, names)
    ]
    batch = RunningBatch(service.loaded)
    batch.admit(rows[:1])
    batch.step()
    batch.step()
    batch.admit(rows[1:3])  # join a batch two tokens in, with other adapters
    batch.step()
    batch.admit(rows[3:])  # a longer prompt: the running rows' cache is left-padded to it
    while batch.rows:
        batch.step()
    decode = service.loaded.tokenizer.decode
    together = [decode(r.tokens, skip_special_tokens=True).strip() for r in rows]
    expected = [alone(service, c, n, GREEDY) for c, n in zip(MORE_CHATS, names)]
    assert together == expected
    assert len(set(together)) > 2  # the adapters change the replies: the equality says something


def test_concurrent_replies_through_the_service_match_one_at_a_time(service):
    names = ["a0", "a1", BASE, "a0", "a1"]
    results: dict[int, str] = {}

    def ask(i: int) -> None:
        time.sleep(0.05 * i)  # arrivals spread over the decoding of the first ones
        results[i] = service.reply(MORE_CHATS[i], names[i], GREEDY)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(5)] == [
        alone(service, c, n, GREEDY) for c, n in zip(MORE_CHATS, names)
    ]
    assert service.rows_run == 5


def finish_order(service: GenerationService) -> list[str]:
    """A long reply starts; once it streams, a short one is asked. Which ends first?"""
    order: list[str] = []
    long_started = threading.Event()

    def long() -> None:
        for _ in service.stream(CHATS[0], BASE, Sampling(max_new_tokens=150, temperature=0.0)):
            long_started.set()
        order.append("long")

    thread = threading.Thread(target=long)
    thread.start()
    assert long_started.wait(30)
    service.reply(CHATS[1], "a0", Sampling(max_new_tokens=3, temperature=0.0))
    order.append("short")
    thread.join()
    return order


def test_a_late_short_request_joins_and_leaves_while_a_long_one_decodes(service):
    assert finish_order(service) == ["short", "long"]
    assert service.batches_run == 2  # two admissions into one running batch


@pytest.mark.parametrize("service", ["static"], indirect=True)
def test_the_static_scheduler_makes_the_short_request_wait(service):
    assert finish_order(service) == ["long", "short"]


def test_finished_rows_leave_and_their_padding_goes(service):
    tokenizer = service.loaded.tokenizer
    short = Row(prompt_ids(tokenizer, MORE_CHATS[3]), "a0", Sampling(2, 0.0))
    long = Row(prompt_ids(tokenizer, CHATS[2]), "a1", Sampling(8, 0.0))
    batch = RunningBatch(service.loaded)
    batch.admit([short, long])
    width = batch.mask.shape[1]
    batch.step()  # the short row reaches its budget of 2 tokens here
    assert short.finished and batch.rows == [long]
    assert batch.mask.shape[1] < width  # the long prompt's padding left with it
    assert batch.cache.get_seq_length() == batch.mask.shape[1]


def test_each_row_keeps_its_own_sampling(service):
    """A greedy row beside sampled rows decodes as it would alone; seeded sampled rows give the
    same tokens in any batch."""
    hot = Sampling(max_new_tokens=10, temperature=1.5, top_p=0.9)
    chats = [CHATS[0], CHATS[1], CHATS[1], CHATS[2]]
    names = ["a0", "a1", "a1", BASE]
    samplings = [GREEDY, hot, hot, hot]
    rows = [
        Row(prompt_ids(service.loaded.tokenizer, c), n, s, seed=i)
        for i, (c, n, s) in enumerate(zip(chats, names, samplings))
    ]
    batch = RunningBatch(service.loaded)
    batch.admit(rows)
    while batch.rows:
        batch.step()
    greedy = service.loaded.tokenizer.decode(rows[0].tokens, skip_special_tokens=True)
    assert greedy.strip() == alone(service, chats[0], "a0", GREEDY)
    assert rows[1].tokens != rows[2].tokens  # same prompt, other seed: sampling happened
    one_by_one = decode_all(service.loaded, chats[1:], names[1:], hot, seeds=[1, 2, 3], max_batch=1)
    together = decode_all(service.loaded, chats[1:], names[1:], hot, seeds=[1, 2, 3], max_batch=3)
    assert one_by_one == together


def test_a_retired_adapter_stays_until_its_last_reply_ends(service, adapters):
    # On a fast machine a short reply can be decoded whole before the retirement below: then
    # nothing was in flight to observe, so try again with a longer reply.
    for tokens in (60, 300, 1000):
        budget = Sampling(max_new_tokens=tokens, temperature=0.0)
        expected = alone(service, CHATS[0], "a0", budget)
        stream = service.stream(CHATS[0], "a0", budget)
        next(stream)
        service.adapters.unload("a0")  # a new champion was crowned mid-reply
        if "a0" in service.adapters.names:
            break  # retired while its reply was still decoding: the case under test
        assert not service.adapters.in_use._busy["a0"], "a busy adapter was deleted"
        list(stream)
        service.adapters.load("a0", adapters[0])
    else:
        pytest.fail("every reply ended before the retirement; the deferral was never exercised")
    text = ""
    for text in stream:  # noqa: B007
        pass
    assert text.strip() == expected
    deadline = time.monotonic() + 5
    while "a0" in service.adapters.names and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "a0" not in service.adapters.names
    with pytest.raises(ModelError, match="no adapter named 'a0'"):
        service.reply(CHATS[0], "a0", GREEDY)
    assert service.reply(CHATS[0], "a1", GREEDY) == alone(service, CHATS[0], "a1", GREEDY)


def test_a_reader_that_stops_frees_its_row(service):
    stream = service.stream(CHATS[0], BASE, Sampling(max_new_tokens=500, temperature=0.0))
    next(stream)
    stream.close()  # the volunteer closed the tab
    started = time.monotonic()
    assert service.reply(CHATS[1], "a1", GREEDY) == alone(service, CHATS[1], "a1", GREEDY)
    deadline = started + 10
    while service.steps_run and time.monotonic() < deadline:
        before = service.steps_run
        time.sleep(0.2)
        if service.steps_run == before:
            break
    assert service.steps_run < 400  # the 500-token row did not decode to its end


def test_nucleus_sampling_keeps_the_top_p_mass_and_follows_the_probabilities():
    import torch

    from crowd.serving.batching import pick_tokens

    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().repeat(4000, 1)
    rows = [Row([1], BASE, Sampling(4, temperature=1.0, top_p=0.9)) for _ in range(4000)]
    counts = torch.bincount(torch.tensor(pick_tokens(logits, rows)), minlength=4).tolist()
    assert counts[3] == 0  # outside the smallest set whose mass reaches 0.9
    for token, p in enumerate([0.5, 0.3, 0.15]):
        assert abs(counts[token] / 4000 - p / 0.95) < 0.04
    greedy = [Row([1], BASE, Sampling(4, temperature=0.0)) for _ in range(3)]
    assert pick_tokens(logits[:3], greedy) == [0, 0, 0]


def test_a_conversations_next_message_reuses_its_cached_prefix(service):
    """The second turn of a conversation prefills only its new tokens, over the first turn's
    cached keys and values, and gives the same greedy reply as without the cache; other
    conversations and adapters do not match it, and new weights under a name forget it."""
    first = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]
    reply = service.reply(first, "a1", GREEDY)
    second = first + [
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "And then what happened to the gull?"},
    ]
    assert service.prefixes.hits == 0 and service.prefixes.tokens > 0
    again = service.reply(second, "a1", GREEDY)
    assert service.prefixes.hits == 1
    assert service.prefixes.reused >= len(prompt_ids(service.loaded.tokenizer, first))
    assert again == alone(service, second, "a1", GREEDY)
    service.reply(second, "a0", GREEDY)  # another adapter: its own cache, no hit
    assert service.prefixes.hits == 1
    # New weights under a1's name: its entries go, and the reply follows the new weights.
    service.adapters.load("a1", service.adapters.paths["a0"])
    assert service.reply(second, "a1", GREEDY) == alone(service, second, "a1", GREEDY)
    assert service.prefixes.hits == 1


def test_next_messages_of_several_conversations_prefill_together(service):
    """Three conversations' next messages arrive at once with a first message: the new tokens
    (of different lengths, over cached prefixes of different lengths) prefill in fewer passes
    than rows, and each greedy reply is the one it gets alone."""
    firsts = [MORE_CHATS[3], MORE_CHATS[0], MORE_CHATS[1]]
    names = ["a0", "a1", "a0"]
    follow = ["Why?", "And then what happened to the gull, and to the keeper's old dog?", "ok"]
    seconds = []
    for chat, name, text in zip(firsts, names, follow):
        reply = service.reply(chat, name, GREEDY)
        seconds.append(
            chat + [{"role": "assistant", "content": reply}, {"role": "user", "content": text}]
        )
    tokenizer = service.loaded.tokenizer
    rows = [Row(prompt_ids(tokenizer, c), n, GREEDY) for c, n in zip(seconds, names)]
    rows.append(Row(prompt_ids(tokenizer, MORE_CHATS[4]), BASE, GREEDY))  # nothing cached
    batch, hits = RunningBatch(service.loaded, service.prefixes), service.prefixes.hits
    batch.admit(rows)
    assert service.prefixes.hits == hits + 3 and batch.prefills < len(rows)
    while batch.rows:
        batch.step()
    together = [tokenizer.decode(r.tokens, skip_special_tokens=True).strip() for r in rows]
    expected = [alone(service, c, n, GREEDY) for c, n in zip(seconds, names)]
    assert together == expected + [alone(service, MORE_CHATS[4], BASE, GREEDY)]
    assert len(set(together)) > 2


def test_rows_of_similar_new_lengths_share_a_prefill_pass():
    from crowd.serving.batching import plan_passes

    assert plan_passes([]) == []
    assert plan_passes([20]) == [[0]]
    assert plan_passes([18, 19, 20, 17], pass_cost=32) == [[3, 0, 1, 2]]  # padding is cheap
    # One long new part would make 16 short rows feed 300 tokens each: it goes alone, after.
    assert plan_passes([20] * 16 + [300], pass_cost=32) == [list(range(16)), [16]]
    assert plan_passes([10, 50], pass_cost=100) == [[0, 1]]  # a pass costs more than padding
    assert plan_passes([10, 50], pass_cost=0) == [[0], [1]]


def test_the_prefix_cache_stays_within_its_token_budget():
    import torch

    from crowd.serving.prefix_cache import PrefixCache

    cache = PrefixCache(max_tokens=100)
    kv = [(torch.zeros(1, 1, 40, 2), torch.zeros(1, 1, 40, 2))]
    for start in range(0, 400, 40):
        cache.put("a", list(range(start, start + 40)), kv)
        assert cache.tokens <= 100
    assert cache.take("a", list(range(0, 40)) + [7]) is None  # evicted, least recent first
    hit = cache.take("a", list(range(360, 400)) + [7])
    assert hit is not None and hit[0] == 40 and hit[1][0][0].shape[2] == 40
    cache.put("a", list(range(360, 420)), [(torch.zeros(1, 1, 60, 2),) * 2])
    assert cache.tokens == 40 + 60  # the turn it extends was replaced
    assert cache.take("b", list(range(360, 420)) + [7]) is None  # another adapter
    cache.forget("a")
    assert cache.tokens == 0
