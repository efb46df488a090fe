"""Request limits on the real app over real HTTP: bodies over the cap are refused (413) before
they are read, however they are sent, uploads are throttled per source, and the largest bodies
anyone can send grow the process by far less than 100 MB (sampled from /proc while they are
sent; the client streams from one small buffer, so its own memory stays flat)."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from loopback import Forwarder, network_address

from crowd.organizer import Organizer
from crowd.service import CrowdService
from crowd.ui import build_app, launch_options

MB = 1024 * 1024


@pytest.fixture
def app_url(settings, db_path):
    settings = replace(settings, max_upload_mb=1, uploads_per_minute=5)
    service = CrowdService(settings, None)
    demo = build_app(service, Organizer(service), oauth=False)
    demo.queue(default_concurrency_limit=None).launch(
        server_name="127.0.0.1",
        server_port=0 or free_port(),
        prevent_thread_lock=True,
        quiet=True,
        **launch_options(settings),
    )
    yield demo.local_url
    demo.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def send_body(url: str, path: str, total: int, declared: int | None) -> int:
    """POST `total` zero bytes to `path` from one 64 KB buffer, with a Content-Length of
    `declared` (None: chunked); returns the HTTP status, once the server answers."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    chunk = bytes(64 * 1024)
    with socket.create_connection((host, port), timeout=60) as sock:
        length = (
            f"Content-Length: {declared}" if declared is not None else "Transfer-Encoding: chunked"
        )
        kind = "multipart/form-data; boundary=b" if "upload" in path else "application/json"
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {kind}\r\n{length}\r\n\r\n"
        sock.sendall(head.encode())
        if "upload" in path:  # a well-formed file part whose bytes never end
            part = 'Content-Disposition: form-data; name="files"; filename="big.bin"'
            opening = f"--b\r\n{part}\r\n\r\n".encode()
            sock.sendall(
                opening if declared is not None else b"%x\r\n%s\r\n" % (len(opening), opening)
            )
        sent = 0
        try:
            while sent < total:
                piece = chunk if declared is not None else b"10000\r\n" + chunk + b"\r\n"
                sock.sendall(piece)
                sent += len(chunk)
            if declared is None:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server stopped reading: its answer is already there
        answer = sock.recv(4096).decode("latin-1")
    return int(answer.split(" ", 2)[1]) if answer.startswith("HTTP/") else 0


class RssSampler(threading.Thread):
    """The process's resident memory every 10 ms: `grown_mb` is the peak above the start."""

    def __init__(self):
        super().__init__(daemon=True)
        self.base = self.peak = self.rss()
        self.done = threading.Event()

    @staticmethod
    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.01)

    @property
    def grown_mb(self) -> float:
        return (self.peak - self.base) / MB


def test_no_request_however_big_grows_the_process_by_100_mb(app_url):
    sampler = RssSampler()
    sampler.start()
    statuses = []
    for path in ("/gradio_api/queue/join", "/gradio_api/call/api_join", "/gradio_api/upload"):
        for declared in (100 * MB, None):  # an honest Content-Length, then a chunked body
            statuses.append(send_body(app_url, path, 100 * MB, declared))
    lying = send_body(app_url, "/gradio_api/call/api_join", 100 * MB, 1000)  # claims 1000
    sampler.done.set()
    sampler.join()
    assert statuses == [413] * 6
    assert lying in (0, 400, 413, 422)  # the server stops at what it was told, and answers
    print(f"largest bodies: the process grew by {sampler.grown_mb:.1f} MB at most")
    assert sampler.grown_mb < 100, f"grew by {sampler.grown_mb:.0f} MB"
    # Under the cap, requests work as before: a join through the API, streamed back.
    with httpx.Client(base_url=app_url, timeout=30) as client:
        posted = client.post("/gradio_api/call/api_join", json={"data": ["Ada", True]})
        assert posted.status_code == 200
        stream = client.get(f"/gradio_api/call/api_join/{posted.json()['event_id']}")
        assert "event: complete" in stream.text


def test_uploads_are_throttled_per_source(app_url):
    def upload(url: str) -> httpx.Response:
        return httpx.post(f"{url}gradio_api/upload", files={"files": ("a.txt", b"hi")}, timeout=30)

    with (
        Forwarder(app_url, network_address(3)) as one,
        Forwarder(app_url, network_address(4)) as two,
    ):
        answers = [upload(one.url).status_code for _ in range(7)]
        assert answers == [200] * 5 + [429] * 2
        refused = upload(one.url)
        assert (
            int(refused.headers["retry-after"]) > 0
            and "uploads" in json.loads(refused.text)["detail"]
        )
        assert upload(two.url).status_code == 200  # another network is not affected


def test_a_refused_upload_is_answered_after_its_body_so_the_answer_is_not_lost(app_url):
    """A server that answers and closes with a body still to come resets the connection when the
    body arrives, and the reset can reach the client (or a proxy in front of the app) before the
    answer does. Here the body comes a moment after the head, as a slow client's or a proxy's
    would: the answer must wait for it, and the connection must end cleanly, not with a reset."""
    host, port = urlsplit(app_url).hostname, urlsplit(app_url).port
    body = b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n\r\nhi\r\n--b--\r\n'
    head = (
        f"POST /gradio_api/upload HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()

    def upload() -> tuple[bool, bytes, bool]:
        """One upload from network 5: whether an answer came before the body was sent, the
        answer, and whether the connection ended in a reset."""
        with socket.create_connection(
            (host, port), timeout=30, source_address=(network_address(5), 0)
        ) as sock:
            sock.sendall(head)
            early = bool(select.select([sock], [], [], 0.3)[0])
            sock.sendall(body)
            time.sleep(0.2)  # a reset for an unread body would have come back by now
            answer = b""
            try:
                while data := sock.recv(65536):
                    answer += data
                    if b"\r\n\r\n" in answer and b"connection: close" not in answer.lower():
                        break  # kept alive: one read holds this small answer whole
            except ConnectionResetError:
                return early, answer, True
            return early, answer, False

    answers = [upload() for _ in range(7)]
    assert [answer.split(b" ", 2)[1] for _, answer, _ in answers] == [b"200"] * 5 + [b"429"] * 2
    for early, answer, reset in answers[5:]:
        assert b"uploads" in answer and not early and not reset
