"""The test forwarder (tests/loopback.py): a client that goes through it arrives from the
forwarder's own loopback address, with the bytes of a streamed response intact."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from loopback import Forwarder, network_address


class Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        body = b"".join(
            [self.client_address[0].encode(), b"\n", b"x" * 200_000]  # more than one CHUNK
        )
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_a_client_through_the_forwarder_arrives_from_its_network(echo_url):
    assert httpx.get(echo_url).text.split("\n")[0] == "127.0.0.1"  # the default source
    for n in (0, 7):
        with Forwarder(echo_url, network_address(n)) as forwarder:
            response = httpx.get(forwarder.url, timeout=10)
            peer, payload = response.text.split("\n")
            assert peer == f"127.0.{10 + n}.1"
            assert payload == "x" * 200_000


def test_network_addresses_are_distinct_24s():
    addresses = [network_address(n) for n in range(240)]
    assert len({a.rsplit(".", 1)[0] for a in addresses}) == 240
    with pytest.raises(ValueError):
        network_address(240)
