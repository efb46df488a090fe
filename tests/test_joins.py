"""New volunteers per network address: the service's limit on a real database, and the real
app on a free port, where one peer forging a different X-Forwarded-For on each of 120 joins
still counts as one address."""

from __future__ import annotations

import json
from dataclasses import replace

import httpx
import pytest
from gradio_http import call, serve

from crowd.limits import Refused
from crowd.network import parse_proxies
from crowd.organizer import Organizer
from crowd.service import CrowdService
from storage.db import connect

MESSAGE = "Too many new volunteers from your network"


def participants(settings) -> int:
    with connect(settings.db_path) as db:
        return db.table("participants").count


def test_the_21st_new_volunteer_from_one_address_in_an_hour_is_refused_storing_nothing(settings):
    service = CrowdService(settings, None)
    for i in range(20):
        service.join(f"Pupil {i}", True, address="203.0.113.7")
    with pytest.raises(Refused, match=rf"{MESSAGE} in an hour .*try again in \d+ minutes"):
        service.join("Pupil 20", True, address="203.0.113.7")
    assert participants(settings) == 20
    service.join("Elsewhere", True, address="2001:db8::7")  # another address is not affected
    assert participants(settings) == 21


def test_a_returning_hugging_face_user_is_not_a_new_volunteer(settings):
    service = CrowdService(replace(settings, joins_per_hour=1), None)
    first = service.join("Ada", True, hf_username="ada", address="203.0.113.7")
    again = service.join("Ada", True, hf_username="ada", address="203.0.113.7")
    assert again.participant_id == first.participant_id
    with pytest.raises(Refused, match=MESSAGE):
        service.join("Bob", True, hf_username="bob", address="203.0.113.7")
    assert participants(settings) == 1


def test_zero_turns_the_join_limit_off(settings):
    service = CrowdService(replace(settings, joins_per_hour=0), None)
    for i in range(25):
        service.join(f"Pupil {i}", True, address="203.0.113.7")
    assert participants(settings) == 25


# -- the real app ------------------------------------------------------------------------------


@pytest.fixture
def launch(settings):
    """Start the real Gradio app (on no model: joining needs none) on a free port; returns its
    URL. Closed at the end of the test."""
    from crowd.ui import build_app

    launched = []

    def start(**changes) -> str:
        service = CrowdService(replace(settings, **changes), None)
        demo = build_app(service, Organizer(service), oauth=False)
        launched.append(demo)
        return serve(demo)

    yield start
    for demo in launched:
        demo.close()


def api_join(client: httpx.Client, name: str, forwarded_for: str) -> tuple[str, str]:
    """POST /api_join as any HTTP client can, then read its result stream: (event, data)."""
    return call(client, "api_join", [name, True], {"X-Forwarded-For": forwarded_for})


def forged_joins(url: str, n: int = 120) -> list[tuple[str, str]]:
    with httpx.Client(base_url=url, timeout=30) as client:
        # each forged hop on a network (a /24) of its own
        return [
            api_join(client, f"Sybil {i}", f"198.{51 + i // 250}.{i % 250}.7") for i in range(n)
        ]


def test_120_joins_with_forged_forwarded_for_from_one_peer_count_as_one_address(launch, settings):
    results = forged_joins(launch())
    accepted = [data for event, data in results if event == "complete"]
    refused = [data for event, data in results if event == "error"]
    assert len(accepted) == 20 and len(refused) == 100
    assert all(MESSAGE in json.loads(data)["error"] for data in refused)
    assert participants(settings) == 20


def test_behind_a_trusted_proxy_the_forwarded_hops_are_different_people(launch, settings):
    # The control: when the peer (here loopback) is a configured proxy, its hops are believed.
    results = forged_joins(launch(trusted_proxies=parse_proxies("127.0.0.1, ::1")), n=30)
    assert [event for event, _ in results] == ["complete"] * 30
    assert participants(settings) == 30
