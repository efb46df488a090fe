"""The organizer page as an attacker meets it: every endpoint that takes the key goes through
the wrapper that knows the caller's address (checked by enumerating the page's endpoints, so a
new unwrapped one fails here), and wrong keys from one network never lock out the organizer
on another, over real HTTP from distinct loopback networks (tests/loopback.py)."""

from __future__ import annotations

import json
import os
import socket

import httpx
import pytest
from loopback import Forwarder, network_address

from crowd.organizer import Organizer
from crowd.replication import health_of
from crowd.service import CrowdService
from crowd.ui import build_app, launch_options
from crowd.ui.organizer import WIRED
from crowd.ui.replication_view import replication_text
from storage.replica_health import iso, utc_now, write_status
from tests.apps import KEY

KEYLESS = {"lambda_1", "text_1"}  # the page's own Markdown loads (by their API names)
KEYLESS_FUNCTIONS = {"pick", "hide_row"}  # row clicks, a confirmation's Cancel


@pytest.fixture
def app(settings, db_path):
    service = CrowdService(settings, None)
    organizer = Organizer(service)
    demo = build_app(service, organizer, oauth=False)
    yield demo, organizer
    demo.close()


def organizer_endpoints(demo) -> list:
    return [fn for fn in demo.fns.values() if fn.page == "organizer"]


def test_every_organizer_endpoint_that_takes_the_key_is_wired(app):
    demo, _ = app
    key_box = next(
        block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "org-key"
    )
    endpoints = organizer_endpoints(demo)
    assert len(endpoints) >= 20
    for fn in endpoints:
        if fn.api_name in KEYLESS or getattr(fn.fn, "__name__", "") in KEYLESS_FUNCTIONS:
            assert key_box not in fn.inputs, fn.api_name
            continue
        assert key_box in fn.inputs, f"{fn.api_name} takes no key: add it to KEYLESS or fix it"
        assert getattr(fn.fn, WIRED, False), f"{fn.api_name} is not wrapped in handlers.wired"
    names = {fn.api_name for fn in endpoints}
    assert {
        "organizer_quality",
        "organizer_hide_person",
        "organizer_unhide_person",
        "organizer_export_model",
        "organizer_export",
        "organizer_replication",
    } <= names


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(client, api_name: str, *data) -> tuple[str, list | str]:
    """POST /gradio_api/call/NAME as any HTTP client can, then read its result stream:
    ('complete', outputs) or ('error', message)."""
    posted = client.post(f"/gradio_api/call/{api_name}", json={"data": list(data)})
    posted.raise_for_status()
    stream = client.get(f"/gradio_api/call/{api_name}/{posted.json()['event_id']}")
    event, payload = "", ""
    for line in stream.text.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            payload = line.split(":", 1)[1].strip()
    return event, json.loads(payload) if payload and payload != "null" else payload


def test_60_wrong_keys_from_one_network_never_lock_out_the_organizer_on_another(app):
    demo, organizer = app
    demo.queue(default_concurrency_limit=None).launch(
        server_name="127.0.0.1",
        server_port=free_port(),
        prevent_thread_lock=True,
        quiet=True,
        **launch_options(),
    )
    endpoints = [
        ("organizer_quality", ()),
        ("organizer_hide_person", ("p1", "")),
        ("organizer_unhide_person", ("p1",)),
        ("organizer_export_model", ("", False)),
        ("organizer_unlock", ()),
        ("organizer_close", ()),
    ]
    with Forwarder(demo.local_url, network_address(1)) as attacker:
        with httpx.Client(base_url=attacker.url, timeout=30) as client:
            for n in range(60):
                api_name, rest = endpoints[n % len(endpoints)]
                event, _ = call(client, api_name, f"guess-{n}", *rest)
                assert event in ("complete", "error")
    # The guesser is backed off: locked after the free tries (on a loaded machine the last
    # lock may have run out by now, so its count is what shows it).
    assert organizer.guard.failures(network_address(1)) > organizer.guard.free
    with Forwarder(demo.local_url, network_address(2)) as desk:
        with httpx.Client(base_url=desk.url, timeout=30) as client:
            event, unlocked = call(client, "organizer_unlock", KEY)
            assert event == "complete" and "round 1 is open" in unlocked[2], unlocked
            event, view = call(client, "organizer_quality", KEY)
            assert event == "complete" and "Review coverage" in view[0], view
    assert organizer.guard.delay_s() == 0  # one network's guesses slow no one else


def test_the_replication_tab_says_what_is_wrong(settings, with_settings, tmp_path):
    assert "Replication is off" in replication_text(health_of(settings))
    folder = with_settings(settings, replica=tmp_path / "replica")
    folder.data_dir.mkdir(parents=True, exist_ok=True)
    assert "has not reported" in " ".join(health_of(folder).problems)
    write_status(
        folder.data_dir,
        {
            "pid": os.getpid(),
            "target": str(folder.replica),
            "state": "replicating",
            "check_every_s": 300,
            "litestream_running": True,
            "synced_at": iso(utc_now()),
            "lag_s": 0.0,
            "local_txid": 7,
            "replica_txid": 7,
            "updated_at": iso(utc_now()),
            "restore_check": {
                "at": iso(utc_now()),
                "ok": False,
                "detail": "the replica cannot be restored: invalid ltx file",
                "seconds": 0.2,
            },
        },
    )
    health = health_of(folder)
    text = replication_text(health)
    assert health.verdict == "failing" and "FAILING" in text
    assert "Restore check" in text and "invalid ltx file" in text and "Lag: 0.0 s" in text
