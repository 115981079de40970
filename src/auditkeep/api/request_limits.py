"""Request sizes bounded before anything reads them (issue #11): bodies by the app, headers by the server.

A GET body only ever holds a date range, so bodies of GET, HEAD, DELETE and OPTIONS are held to
AUDITKEEP_MAX_GET_BODY_BYTES, other non-ingest bodies to AUDITKEEP_MAX_BODY_BYTES; ingest
(POST /api/v1/audit_logs) keeps its own 16 MB bound in its route. Over the bound the answer is 413 at once,
with `Connection: close`, and the rest of the body is never read: before this a 300 MB GET body was read
whole (and memory grew by ~300 MB) on its way to a 403.

uvicorn's httptools parser bounds neither the request line nor the headers (a 100 MB Authorization header
was held in memory whole), so `auditkeep serve` runs `BoundedHttpToolsProtocol`, which answers 431 once a
request's head passes AUDITKEEP_MAX_HEADER_BYTES.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from auditkeep.settings import Settings, get_settings

INGEST = ("POST", "/api/v1/audit_logs")  # bounded by its route (schemas.events.MAX_BODY_BYTES)
BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


def _response(status: int, detail: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = b'{"detail":"' + detail.encode() + b'"}'
    return body, [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        # The unread rest of the body must not be taken for the next request: end the connection.
        (b"connection", b"close"),
    ]


class _BodyLimit:
    """Answers 413, without reading on, a body over its route's bound (by Content-Length when declared,
    else by counting a chunked body as it arrives, buffering at most the bound)."""

    def __init__(self, app: ASGIApp, *, max_get_body_bytes: int, max_body_bytes: int) -> None:
        self.app = app
        self.max_get_body_bytes = max_get_body_bytes
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) == INGEST:
            await self.app(scope, receive, send)
            return
        limit = self.max_get_body_bytes if scope["method"] in BODYLESS_METHODS else self.max_body_bytes
        length = chunked = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = value
        if length is not None:
            # The server delivers no more than Content-Length bytes, so a declared length is the bound.
            if not length.isdigit() or int(length) <= limit:
                await self.app(scope, receive, send)
            else:
                await _too_large(send, limit)
            return
        if chunked is None:  # no body at all: the common GET, at no cost
            await self.app(scope, receive, send)
            return
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            size += len(message.get("body", b""))
            if size > limit:
                await _too_large(send, limit)
                return
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(parts), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` that first hands over the body already read, then listens on (for the disconnect)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


async def _too_large(send: Send, limit: int) -> None:
    body, headers = _response(413, f"request body over {limit} bytes")
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install(app: FastAPI, settings: Settings) -> None:
    """Bound the bodies of `app`'s requests (added last, so it runs first)."""
    app.add_middleware(
        _BodyLimit, max_get_body_bytes=settings.max_get_body_bytes, max_body_bytes=settings.max_body_bytes
    )


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering 431 to a request whose line and headers pass
    AUDITKEEP_MAX_HEADER_BYTES, before the parser holds more of them (`auditkeep serve` runs it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_head = get_settings().max_header_bytes
        self._in_head = True  # reading a request's line and headers (or waiting for the next request)
        self._head_bytes = 0
        self._tail = b""  # the last bytes seen, in case the blank line that ends the head is split
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered 431 and closing: whatever else arrives is dropped unread
        if self._in_head:
            room = self._max_head - self._head_bytes
            if len(data) > room:
                # Over the bound unless the head ends within it (the rest of the chunk is body).
                end = (self._tail + data).find(b"\r\n\r\n")
                if end < 0 or end + 4 - len(self._tail) > room:
                    self._refuse()
                    return
            self._head_bytes += len(data)
            self._tail = data[-3:]
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes, self._tail = False, 0, b""
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True

    def _refuse(self) -> None:
        body, headers = _response(431, f"request headers over {self._max_head} bytes")
        head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(STATUS_LINE[431] + head + b"\r\n" + body)
        self.transport.close()
        self._refused = True
