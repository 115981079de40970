"""The in-memory rate-limit storage counts without starting a thread per request (issue #11)."""

from __future__ import annotations

import threading
import time

import pytest

from auditkeep.api.ratelimit import _SweptMemoryStorage


def test_counting_requests_apart_starts_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """limits' own MemoryStorage starts a Timer thread for a request that comes 10 ms after the last."""
    storage = _SweptMemoryStorage()
    started: list[threading.Thread] = []
    start = threading.Thread.start

    def counted(thread: threading.Thread) -> None:
        started.append(thread)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", counted)
    for _ in range(5):
        storage.incr("key/1", 60)
        time.sleep(0.02)
    assert started == []
    assert storage.get("key/1") == 5


def test_expired_counters_restart_and_are_swept() -> None:
    """An expired counter counts from one again, and a counter nobody asks for is dropped by a later sweep."""
    class Swept(_SweptMemoryStorage):
        SWEEP_SECONDS = 0.05

    storage = Swept()
    storage.incr("gone", 0.01)
    storage.incr("kept", 0.01)
    time.sleep(0.06)
    assert storage.incr("kept", 60) == 1
    assert "gone" not in storage.storage
