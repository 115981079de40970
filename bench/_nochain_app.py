"""Bench only: the real app with the chain computation stubbed out, to measure what chaining costs (#3).

Loaded by bench/ingest_export.py as a uvicorn factory (`_nochain_app:create_app`), so every worker
process applies the patch before serving. What is removed is everything ingest does for the hash chain
and the Merkle tree: canonical serialization (integrity.canonical_parts), the chain hash, the leaf hash,
the compact range, and the automatic signed checkpoints; rows are stored with constant hashes and would
fail verification. The service itself has no way to skip chaining.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

import auditkeep.ingest.service as service
from auditkeep.api.app import create_app as _create_app
from auditkeep.storage.events import ChainHead

_ZERO_HEX = "0" * 64


def _no_parts(log: Any, *, plain: bool = False) -> tuple[bytes, bytes]:
    return b"", b""


def _chain_without_hashes(
    org_id: int, head: ChainHead, batch: list[Any]
) -> tuple[list[tuple[Any, ...]], ChainHead]:
    """service._chain less the hashing: the same rows, seq assigned, constant hashes."""
    seq = head.seq
    rows: list[tuple[Any, ...]] = []
    for item in batch:
        seq += 1
        rows.append((org_id, seq, *item.values, _ZERO_HEX, _ZERO_HEX, item.ip_key))
    return rows, ChainHead(seq, head.hash, head.merkle_frontier)


def create_app() -> FastAPI:
    service.canonical_parts = _no_parts  # type: ignore[assignment]
    service._chain = _chain_without_hashes  # type: ignore[assignment]
    service.maybe_checkpoint = lambda *args: None  # type: ignore[assignment]
    return _create_app()
