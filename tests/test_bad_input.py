"""Every public endpoint, called over HTTP as any client can, with ids and values of the wrong
kind (huge, text, empty, lists, objects): each answers with a refusal that says what is wrong,
never Gradio's bare "Error" from an uncaught exception, and stores nothing it should not. The
endpoints are enumerated from the app, so a new one is attacked too.

Inputs of a chatbot, a file or a slider are left well-formed: Gradio itself validates those
values before any handler runs, and answers a malformed one with a bare error (only
`show_error=True` would word it, and that would show every internal error's message too)."""

from __future__ import annotations

import itertools
import json
import socket

import httpx
import pytest

from crowd.limits import Limits
from crowd.organizer import Organizer
from crowd.service import CrowdService
from crowd.ui import build_app, launch_options
from storage.db import connect
from tests.apps import KEY

BAD = [10**30, "abc", None, [1, 2], {"id": 1}, 1.5, "9" * 400]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app(settings, db_path, new_generation):
    generation = new_generation(max_new_tokens=4)
    service = CrowdService(settings, generation, limits=Limits(chats_per_minute=1000))
    demo = build_app(service, Organizer(service), oauth=False)
    demo.queue(default_concurrency_limit=None).launch(
        server_name="127.0.0.1",
        server_port=free_port(),
        prevent_thread_lock=True,
        quiet=True,
        **launch_options(settings),
    )
    yield demo, service
    demo.close()
    generation.close()


def call(client: httpx.Client, name: str, data: list) -> tuple[str, object]:
    posted = client.post(f"/gradio_api/call/{name}", json={"data": data})
    if posted.status_code != 200:
        return f"http {posted.status_code}", posted.text
    stream = client.get(f"/gradio_api/call/{name}/{posted.json()['event_id']}")
    event, payload = "", None
    for line in stream.text.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            payload = json.loads(line.split(":", 1)[1].strip())
    return event, payload


GRADIO_VALIDATED = {"Chatbot": [], "File": None, "Slider": 0.5}


def public_endpoints(demo) -> dict[str, list[str]]:
    """api name -> its inputs' component names, for every endpoint a client may call."""
    info = demo.get_api_info()
    return {
        name.lstrip("/"): [p.get("component") for p in endpoint["parameters"]]
        for name, endpoint in info["named_endpoints"].items()
    }


def attempts(first: object, components: list[str]) -> list[list]:
    """The first argument right (the token or the organizer's key) and every other one bad, in
    turn with each bad value; then every argument bad."""

    def fill(bad: object, keep_first: bool) -> list:
        values = [GRADIO_VALIDATED.get(c, bad) for c in components]
        return [first, *values[1:]] if keep_first and values else values

    tries = [fill(bad, True) for bad in BAD] if len(components) > 1 else []
    return tries + [fill(bad, False) for bad in BAD[:3]]


def test_every_public_endpoint_refuses_malformed_input_clearly(app):
    demo, service = app
    endpoints = public_endpoints(demo)
    assert {"api_rewrite", "api_review", "organizer_hide", "organizer_quality"} <= set(endpoints)
    bare = []
    with httpx.Client(base_url=demo.local_url, timeout=60) as client:
        event, joined = call(client, "api_join", ["Ada", True])
        assert event == "complete", joined
        token = joined[0]
        event, reply = call(client, "api_chat", [token, None, "Hello"])
        assert event == "complete", reply
        with connect(service.settings.db_path) as db:
            before = db.table("corrections").count
        for name, components in sorted(endpoints.items()):
            first = KEY if name.startswith("organizer") else token
            for data in attempts(first, components):
                event, payload = call(client, name, data)
                message = payload.get("error") if isinstance(payload, dict) else None
                if event == "error" and not (isinstance(message, str) and len(message) > 5):
                    bare.append((name, data, payload))
                assert not event.startswith("http 5"), (name, data, payload)
        with connect(service.settings.db_path) as db:
            assert db.table("corrections").count == before  # nothing malformed was stored
    assert not bare, "bare errors:\n" + "\n".join(map(repr, bare[:20]))


def test_ids_that_are_not_whole_numbers_get_a_message_naming_them(app):
    from crowd.ui.api import VolunteerApi

    demo, service = app
    api = VolunteerApi(service)
    token = api.api_join("Grace", True)
    for method, bad in itertools.product(
        (api.api_rewrite, api.api_rate, api.api_label), (10**30, "abc", None, [1])
    ):
        import gradio as gr

        with pytest.raises(gr.Error, match="message id"):
            method(token, bad, "x" if method is not api.api_rate else 1)
