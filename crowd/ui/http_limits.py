"""Request limits at the door: an ASGI middleware on Gradio's app (`launch(app_kwargs=...)`),
before any route reads a body.

- A body larger than its cap is refused with HTTP 413 before it is read into memory: at once
  when its Content-Length says so, else as soon as the bytes received pass the cap (the route
  then sees the client gone, and the caller gets the 413). The cap is CROWD_MAX_REQUEST_KB for
  every request but uploads, CROWD_MAX_UPLOAD_MB (plus room for the multipart framing) for
  `/gradio_api/upload`, which Gradio keeps checking per file.
- Uploads are counted per source address (behind the trusted proxies, `crowd.network`):
  more than CROWD_UPLOADS_PER_MINUTE get HTTP 429 with Retry-After; an upload is kept on disk
  for an hour, so an unthrottled one could fill it. A refused upload's body (within the cap) is
  read and dropped before the answer: a server that closes with a body still coming resets the
  connection, and the reset can reach the client, or a proxy in front, before the answer.
Responses are not touched, so streaming, server-sent events and websockets pass as they are.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from crowd.limits import RateLimiter, Refused
from crowd.network import Network, client_address

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

UPLOAD_PATH = "/gradio_api/upload"
MULTIPART_ROOM = 64 * 1024  # boundaries and part headers around an upload's bytes


class RequestLimits:
    def __init__(
        self,
        app: Callable,
        *,
        max_body: int,
        max_upload: int,
        uploads_per_minute: int,
        trusted: tuple[Network, ...] = (),
    ):
        self.app, self.trusted = app, trusted
        self.max_body, self.max_upload = max_body, max_upload + MULTIPART_ROOM
        self.uploads_per_minute = uploads_per_minute
        self.rate = RateLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope.get("path", "").endswith(UPLOAD_PATH) and scope.get("method") == "POST"
        cap = self.max_upload if upload else self.max_body
        declared = _content_length(scope)
        if upload:
            try:
                self.rate.hit(f"upload:{self._source(scope)}", self.uploads_per_minute, "uploads")
            except Refused as exc:
                if declared is None or declared <= cap:
                    await _drain(receive, cap)
                wait = str(math.ceil(exc.retry_after_s or 60))
                return await _refuse(send, 429, str(exc), [(b"retry-after", wait.encode())])
        if declared is not None and declared > cap:
            return await _refuse(send, 413, _too_large(cap))
        await self._counted(scope, receive, send, cap)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, cap: int) -> None:
        """Pass the request on, cutting its body off past `cap` bytes (a chunked body, or one
        longer than its Content-Length claimed)."""
        received, over, answered = 0, False, False

        async def counted_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if not over:
                await send(message)
            elif not answered:  # what the route says to a vanished client is replaced
                answered = True
                await _refuse(send, 413, _too_large(cap))

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not answered:
            await _refuse(send, 413, _too_large(cap))

    def _source(self, scope: Scope) -> str | None:
        client = scope.get("client") or (None, None)
        forwarded = [
            value.decode("latin-1")
            for name, value in scope.get("headers", [])
            if name == b"x-forwarded-for"
        ]
        return client_address(client[0], forwarded, self.trusted)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _drain(receive: Receive, cap: int) -> None:
    """Read and drop a request's body, up to `cap` bytes or the client's going."""
    received = 0
    while received <= cap:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        received += len(message.get("body", b""))


def _too_large(cap: int) -> str:
    return f"The request is larger than this server accepts ({cap // 1024:,} KB)."


async def _refuse(send: Send, status: int, message: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
