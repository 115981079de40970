"""Test doubles for the capture tests: an ingest endpoint that can be switched off, refuse, or hang.
(A uniquely named module rather than conftest.py, so that tests can import it.)"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from auditkeep.client import Client, RetryPolicy


@dataclass
class ToggleService:
    """POST /api/v1/audit_logs, stored by event_uuid. `mode`: "up", "down" (connection refused),
    "503", "401", or "gated" (each request waits for `gate`). Events whose url is in `refuse` get a 422
    naming their index."""

    mode: str = "up"
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)
    posts: int = 0
    refuse: set[str] = field(default_factory=set)
    gate: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.mode == "gated":
            self.gate.wait(10)
        if self.mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if self.mode == "503":
            return httpx.Response(503, json={"detail": "unavailable"})
        if self.mode == "401":
            return httpx.Response(401, json={"detail": "Invalid API key"}, headers={"WWW-Authenticate": "Key"})
        events = json.loads(request.content)
        bad = [{"loc": ["body", i, "url"], "msg": "refused", "type": "value_error"}
               for i, e in enumerate(events) if e["url"] in self.refuse]
        if bad:
            return httpx.Response(422, json={"detail": bad})
        with self.lock:
            self.posts += 1
            for event in events:
                self.stored.setdefault(event["event_uuid"], event)
        return httpx.Response(201, json={"event_uuids": [e["event_uuid"] for e in events]})

    def client(self) -> Client:
        """An SDK client wired to this service, failing fast (the shipper has its own fallback)."""
        return Client("k", "http://audit.test", transport=httpx.MockTransport(self.handler),
                      retry=RetryPolicy(max_retries=0))


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `condition()` holds; fail the test if it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.005)
