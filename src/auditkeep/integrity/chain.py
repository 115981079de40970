"""The per-organization hash chain: hash_n = SHA-256(prev_hash_n ‖ canonical_n), prev_hash_1 = 0³²."""

from __future__ import annotations

import hashlib

ZERO_HASH = bytes(32)
ZERO_HASH_HEX = ZERO_HASH.hex()


def chain_hash(prev_hash: bytes, canonical: bytes) -> bytes:
    """The hash of an event given its predecessor's hash and its own canonical bytes."""
    return hashlib.sha256(prev_hash + canonical).digest()
