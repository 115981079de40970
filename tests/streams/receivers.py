"""Real receivers on loopback for the stream tests: an HTTP server that records what it is sent and
answers as a test script tells it to."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


# Given a delivery, the status and headers to answer with.
Answer = Callable[[Delivery], tuple[int, dict[str, str]]]


@dataclass
class WebhookReceiver:
    url: str
    received: list[Delivery] = field(default_factory=list)  # acknowledged (2xx) deliveries only
    attempts: list[Delivery] = field(default_factory=list)  # every request
    answer: Answer = lambda d: (200, {})

    def events(self) -> list[dict[str, Any]]:
        """Every event of every acknowledged delivery, in the order received."""
        return [e for d in self.received for e in d.json["events"]]


def verify_signature(secret: str, delivery: Delivery) -> bool:
    """What docs/streams.md tells a receiver to do."""
    parts = dict(p.split("=", 1) for p in delivery.headers["auditkeep-signature"].split(","))
    mac = hmac.new(secret.encode(), f"{parts['t']}.".encode() + delivery.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, parts["v1"])


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            delivery = Delivery({k.lower(): v for k, v in self.headers.items()}, body)
            with lock:
                receiver.attempts.append(delivery)
                status, headers = receiver.answer(delivery)
                if 200 <= status < 300:
                    receiver.received.append(delivery)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
