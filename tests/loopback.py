"""Clients from other networks on one machine: a TCP forwarder that listens on a loopback address
and reaches the app *from* that address, so the app sees each client arrive from its own network.

All of 127.0.0.0/8 is local on Linux, and to the app one /24 is one network, so 127.0.10.1,
127.0.11.1, ... stand for volunteers on different networks (`network_address`). Neither a browser
nor gradio_client can choose the address they connect from; through a forwarder bound to
127.0.11.1 they arrive from there:

    with Forwarder(app_url, network_address(1)) as forwarder:
        client = Client(forwarder.url)      # the app sees 127.0.11.1

Bytes are copied both ways as they come, so streaming replies, server-sent events and websockets
pass through unchanged. Each way ends on its own, as through a real proxy: when one side stops
sending (or its socket fails) the other is told no more is coming, and what it still sends back
is passed on; both sockets close once both ways have ended.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

CHUNK = 65536


def network_address(n: int) -> str:
    """The loopback address that stands for the n-th network (0 <= n < 240): 127.0.(10+n).1."""
    if not 0 <= n < 240:
        raise ValueError(f"network {n} is out of range (0-239)")
    return f"127.0.{10 + n}.1"


class Forwarder:
    """Listens on (`bind`, a free port) and forwards each connection to `target_url`'s host and
    port, connecting from `bind`. A context manager; `url` is where clients connect."""

    def __init__(self, target_url: str, bind: str):
        parts = urlsplit(target_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.bind = bind
        self.listener = socket.create_server((bind, 0))
        self.url = f"{parts.scheme or 'http'}://{bind}:{self.listener.getsockname()[1]}/"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name=f"forward-{bind}", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            try:
                upstream = socket.create_connection(self.target, source_address=(self.bind, 0))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            ended = [0]  # how many of the two ways have ended, under the lock
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, ended), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, ended: list[int]) -> None:
        """Copy bytes from `src` to `dst` until `src` stops sending or either socket fails, then
        tell `dst` no more is coming; the way that ends second closes both sockets."""
        try:
            while data := src.recv(CHUNK):
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with self._lock:
            ended[0] += 1
            last = ended[0] == 2
            if last:
                self._open.difference_update((src, dst))
        if last:
            src.close()
            dst.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            sockets, self._open = list(self._open), set()
        for s in sockets:
            s.close()

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
