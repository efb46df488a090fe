"""The first page before the model: the model loads in the background; a chat waits for it."""

from __future__ import annotations

import threading
import time

import pytest

from crowd.limits import Refused
from crowd.models import ModelError
from crowd.serving.generation import GenerationService
from crowd.serving.warmup import WarmingGeneration

HELLO = [{"role": "user", "content": "Hello!"}]


def test_a_chat_sent_while_the_model_warms_up_waits_for_it(new_generation):
    gate = threading.Event()

    def load() -> GenerationService:
        gate.wait(30)  # the slow part of a real start: converting and loading the model
        return new_generation(max_new_tokens=4)

    warming = WarmingGeneration(load)
    replies: list[str] = []
    chat = threading.Thread(target=lambda: replies.append(warming.reply(HELLO)))
    chat.start()
    time.sleep(0.5)
    assert not warming.ready and chat.is_alive() and not replies
    gate.set()
    chat.join(60)
    assert warming.ready and len(replies) == 1 and isinstance(replies[0], str)
    assert "".join(warming.stream(HELLO))  # and it streams like the real service
    warming.close()


def test_a_model_that_fails_to_load_refuses_chats_saying_why(caplog):
    def load() -> GenerationService:
        raise ModelError("CROWD_BASE_MODEL='/nowhere': no such folder")

    warming = WarmingGeneration(load)
    with pytest.raises(Refused, match="failed to load on this server.*no such folder"):
        warming.reply(HELLO)
    assert "THE MODEL FAILED TO LOAD" in caplog.text and not warming.ready


def test_a_chat_waits_only_so_long():
    warming = WarmingGeneration(lambda: time.sleep(5), wait_s=0.2)  # type: ignore[arg-type,return-value]
    with pytest.raises(Refused, match="still warming up"):
        list(warming.stream(HELLO))
