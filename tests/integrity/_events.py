"""Event builders shared by the integrity tests (computed here without the code under test)."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ZERO = "0" * 64
# A fixed key, so signatures (deterministic in Ed25519) can be pinned. Never use it for anything real.
TEST_KEY_SEED = bytes(range(32))


def fixed_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(TEST_KEY_SEED)


def make_log(i: int) -> dict[str, Any]:
    """The 17 API fields of a plausible event number `i`."""
    return {
        "action": "user.login" if i % 2 else "document.update",
        "client_ip": f"203.0.113.{i % 250}",
        "event_uuid": f"00000000-0000-4000-8000-{i:012d}",
        "is_support_user": i % 7 == 0,
        "log_entry": f"entry {i} ✓",
        "object_id": i * 1000,
        "object_type": "document",
        "payload": {"n": i, "nested": {"ok": True, "tags": ["a", "é"]}},
        "referer": None,
        "request_type": "POST",
        "source": "web",
        "status": "success",
        "timestamp": f"2024-05-01T12:{i // 60 % 60:02d}:{i % 60:02d}.{i:06d}Z",
        "url": f"https://app.example.com/doc/{i}",
        "user_agent": "Mozilla/5.0",
        "user_email": "alice@example.com",
        "user_id": 7,
    }


def chain(logs: list[dict[str, Any]], first_seq: int = 1, prev_hash: str = ZERO) -> list[dict[str, Any]]:
    """Events with seq, prev_hash and hash, chained the way docs/integrity.md defines it."""
    events = []
    prev = prev_hash
    for offset, log in enumerate(logs):
        seq = first_seq + offset
        canonical = rfc8785.dumps({**log, "seq": seq})
        digest = hashlib.sha256(bytes.fromhex(prev) + canonical).hexdigest()
        events.append({**log, "seq": seq, "prev_hash": prev, "hash": digest})
        prev = digest
    return events


def make_events(n: int) -> list[dict[str, Any]]:
    """A valid chain of `n` events, seq 1..n."""
    return chain([make_log(i) for i in range(1, n + 1)])


def logs_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The 17 API fields of each event, without seq, prev_hash and hash."""
    return [{k: v for k, v in e.items() if k not in ("seq", "prev_hash", "hash")} for e in events]
