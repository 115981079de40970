"""A Splunk HTTP Event Collector on loopback for the stream tests: it checks the token, parses the
concatenated event objects, keeps per-channel ackIds acknowledged after a delay, and can be told to go
down (its port refuses connections), answer 503 "Server is busy", refuse a given event (400 code 6), or
take a request and then lose it (200 and an ackId that is never acknowledged)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson


def split_objects(body: bytes) -> list[dict[str, Any]]:
    """HEC's batch format: JSON objects one after another, with or without whitespace between them.
    Numbers with a fraction parse as Decimal, so `time` is compared digit for digit."""
    text = body.decode()
    decoder = json.JSONDecoder(parse_float=Decimal)
    objects, at = [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return objects
        obj, at = decoder.raw_decode(text, at)
        objects.append(obj)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0


@dataclass
class HecReceiver:
    token: str
    url: str = ""
    ack_enabled: bool = False  # the token has indexer acknowledgement turned on
    ack_delay: float = 0.0  # seconds from accepting a request until it is indexed and acknowledged
    busy: int = 0  # answer the next N event requests 503 code 9
    lose: int = 0  # accept the next N event requests with 200 and an ackId, then never index them
    refuse: Callable[[dict[str, Any]], bool] = lambda obj: False  # events to refuse as invalid data
    requests: list[Request] = field(default_factory=list)  # every request, event posts and ack polls
    indexed: list[dict[str, Any]] = field(default_factory=list)  # HEC event objects, in indexing order
    _pending: dict[tuple[str, int], tuple[float, list[dict[str, Any]]]] = field(default_factory=dict)
    _next_ack: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _port: int = 0

    def events(self) -> list[dict[str, Any]]:
        """The `event` of every indexed object (the stream's records), in the order indexed."""
        self.settle()
        with self._lock:
            return [o["event"] for o in self.indexed]

    def event_posts(self) -> list[Request]:
        return [r for r in self.requests if r.path == "/services/collector/event"]

    def settle(self) -> None:
        """Index what the delay has let through (acks are answered from this too)."""
        now = time.monotonic()
        with self._lock:
            for key, (ready, objects) in sorted(self._pending.items(), key=lambda kv: kv[1][0]):
                if ready <= now:
                    self.indexed.extend(objects)
                    del self._pending[key]

    def index_pending(self) -> None:
        """Index everything accepted and not yet indexed, lost requests included (what a collector that
        was only slow to acknowledge ends up holding)."""
        with self._lock:
            for key in sorted(self._pending):
                self.indexed.extend(self._pending.pop(key)[1])

    # --- answering --------------------------------------------------------------------------------------

    def handle(self, path: str, query: dict[str, list[str]], headers: dict[str, str],
               body: bytes) -> tuple[int, dict[str, Any]]:
        if headers.get("authorization") is None:
            return 401, {"text": "Token is required", "code": 2}
        if headers["authorization"] != f"Splunk {self.token}":
            return 403, {"text": "Invalid token", "code": 4}
        channel = headers.get("x-splunk-request-channel") or (query.get("channel") or [None])[0]
        if path == "/services/collector/ack":
            if not self.ack_enabled:
                return 400, {"text": "ACK is disabled", "code": 14}
            if channel is None:
                return 400, {"text": "Data channel is missing", "code": 10}
            self.settle()
            asked = orjson.loads(body)["acks"]
            with self._lock:
                return 200, {"acks": {str(a): a < self._next_ack.get(channel, 0) and (channel, a) not in self._pending
                                      for a in asked}}
        if path != "/services/collector/event":
            return 404, {"text": "The requested URL was not found on this server.", "code": 404}
        if self.ack_enabled and channel is None:
            return 400, {"text": "Data channel is missing", "code": 10}
        if self.busy:
            self.busy -= 1
            return 503, {"text": "Server is busy", "code": 9}
        try:
            objects = split_objects(body)
        except ValueError:
            return 400, {"text": "Invalid data format", "code": 6, "invalid-event-number": 0}
        if not objects:
            return 400, {"text": "No data", "code": 5}
        for i, obj in enumerate(objects):
            if "event" not in obj:
                return 400, {"text": "Event field is required", "code": 12, "invalid-event-number": i}
            if self.refuse(obj):
                return 400, {"text": "Invalid data format", "code": 6, "invalid-event-number": i}
        lost = self.lose > 0
        if lost:
            self.lose -= 1
        with self._lock:
            if not self.ack_enabled:
                self.indexed.extend(objects)
                return 200, {"text": "Success", "code": 0}
            assert channel is not None
            ack_id = self._next_ack.get(channel, 0)
            self._next_ack[channel] = ack_id + 1
            ready = float("inf") if lost else time.monotonic() + self.ack_delay
            self._pending[(channel, ack_id)] = (ready, objects)
        return 200, {"text": "Success", "code": 0, "ackId": ack_id}

    # --- up and down ------------------------------------------------------------------------------------

    def up(self) -> None:
        """Listen (again, on the same port once it has one)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = urlsplit(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                request = Request(parts.path, headers, body)
                status, answer = receiver.handle(parts.path, parse_qs(parts.query), headers, body)
                request.status = status
                with receiver._lock:
                    receiver.requests.append(request)
                raw = orjson.dumps(answer)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self._port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        """Stop listening: connections to the port are refused until `up()`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextmanager
def hec_receiver(token: str, **settings: Any) -> Iterator[HecReceiver]:
    receiver = HecReceiver(token=token, **settings)
    receiver.up()
    try:
        yield receiver
    finally:
        receiver.down()
