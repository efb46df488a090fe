"""Calling the app's named endpoints as any HTTP client can: POST the call, then read its
result stream (server-sent events). What tests that put clients on other networks use."""

from __future__ import annotations

import socket

import httpx


def call(
    client: httpx.Client, name: str, data: list, headers: dict | None = None
) -> tuple[str, str]:
    """POST /gradio_api/call/NAME with `data`, then read the stream: (event, last data line);
    the event is 'complete' or 'error'."""
    posted = client.post(f"/gradio_api/call/{name}", json={"data": data}, headers=headers)
    posted.raise_for_status()
    stream = client.get(f"/gradio_api/call/{name}/{posted.json()['event_id']}", headers=headers)
    event = payload = ""
    for line in stream.text.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            payload = line.split(":", 1)[1].strip()
    return event, payload


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(demo) -> str:
    """Launch the app's Blocks in this process on a free loopback port, as app.py would (the
    same launch options); returns its URL. The caller closes it (`demo.close()`)."""
    from crowd.ui import launch_options

    port = free_port()
    demo.queue(default_concurrency_limit=None).launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        **launch_options(),
    )
    return f"http://127.0.0.1:{port}"
