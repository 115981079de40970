"""Which reads of the audit log write an `audit_logs.read` record of their own (issue #9).

Every reader and every query leaves a trace, but not every request (docs/architecture.md, "Recording
reads"):

- a *walk* (a read in timestamp order, paged by cursor or not) is recorded by its first page. The record
  states the query and reads through its own seq (the walk's snapshot). The cursors of its `Link`s name
  that record and a digest of the reader and the query, under an HMAC no client can forge; a page that
  presents such a cursor with the same reader and query, within `read_session_seconds` of the record,
  writes none. Any other cursor starts a new recorded walk (one that fails its HMAC is refused first);
- a *poll* (`after_seq`) is recorded by the first poll of a reader (an API key) with one filter set; its
  later polls with that filter set within `read_session_seconds` of the record write none. The session
  lives in the `read_sessions` table, so every worker and node sees it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditkeep.auth.principals import Principal
from auditkeep.ingest import checkpointing
from auditkeep.ingest.reads import ReadRecord, record_read
from auditkeep.ingest.selfaudit import Origin
from auditkeep.integrity.canonical import canonical_json
from auditkeep.integrity.keyring import cursor_secret
from auditkeep.storage import Storage
from auditkeep.storage.read_sessions import ReadSession, find_session, start_session


def _utcnow() -> datetime:
    return datetime.now(UTC)


# The time the rule goes by; tests replace it to simulate an hour of polling without sleeping.
clock: Callable[[], datetime] = _utcnow


@dataclass(frozen=True, slots=True)
class WalkMark:
    """What a cursor says about its walk: the record covering it, the digest of the walk's reader and
    query, and when the record was written (Unix seconds)."""

    record_uuid: str
    binding: str
    started: int


@dataclass(frozen=True, slots=True)
class ReadTrace:
    """How a read is accounted for: the record it wrote (None when an earlier one covers it), and for a
    walk the mark its next page's cursor carries."""

    record: ReadRecord | None
    walk: WalkMark | None = None

    def wait_durable(self) -> None:
        """Return once the read's record, if it wrote one, is on disk (ingest/reads.py)."""
        if self.record is not None:
            self.record.wait_durable()


def reader_of(principal: Principal) -> str:
    """Who reads, as a session and a cursor tell: the API key, else the user or service account."""
    if principal.key_id is not None:
        return f"key:{principal.key_id}"
    return f"{principal.kind}:{principal.id}"


def query_digest(storage: Storage, principal: Principal, query: dict[str, Any], key: bytes | None = None) -> str:
    """HMAC-SHA-256 (hex) of the reader and the query, in canonical JSON, under the organization's cursor key.

    Keyed, not a plain SHA-256: a query holds filter values (a person's email, an address), and the digest
    is stored (read_sessions) and shown (in cursors), so an unkeyed one would let anyone confirm a guessed
    value, and would outlive that value's erasure (issue #12, docs/integrity.md §13).
    """
    text = canonical_json({"org": principal.org_id, "reader": reader_of(principal), "query": query})
    return hmac.new(key or cursor_key(storage, principal.org_id), text, hashlib.sha256).hexdigest()


def cursor_key(storage: Storage, org_id: int) -> bytes:
    """The key of an organization's cursors' HMACs, derived from the checkpoint signing key: every node
    that signs this deployment's checkpoints shares it already, and it stays out of the database's reach.
    One key per organization, so a cursor minted for one organization is refused (422) by every other:
    it cannot even carry the other's walk record into their log."""
    return _org_key(_secret(checkpointing.signing_key(storage)), org_id)


def cursor_keys(storage: Storage, org_id: int) -> list[bytes]:
    """Every key an organization's cursor may be signed with: `cursor_key` (which signs new ones) first,
    then those of the signing keys `auditkeep signing-key rotate` retired, so walks in progress across a
    rotation go on instead of failing with a 422 (integrity/keyring.py keeps the retired secrets)."""
    return [cursor_key(storage, org_id),
            *(_org_key(secret, org_id) for secret in checkpointing.retired_cursor_secrets(storage))]


def _org_key(secret: bytes, org_id: int) -> bytes:
    return hmac.new(secret, f"org {org_id}".encode(), hashlib.sha256).digest()


@lru_cache(maxsize=4)
def _secret(key: Ed25519PrivateKey) -> bytes:
    return cursor_secret(key)


def _expired(started: datetime, now: datetime, storage: Storage) -> bool:
    return (now - started).total_seconds() >= storage.settings.read_session_seconds


def trace_walk(storage: Storage, origin: Origin, *, actor: Principal, log_entry: str, query: dict[str, Any],
               mark: WalkMark | None, snapshot: int | None, keys: list[bytes] | None = None) -> ReadTrace:
    """Record a walk's page, unless the authentic `mark` of its cursor shows the same reader and query
    within the session time (then the walk's first record covers it).

    `snapshot` is the cursor's bound for a walk resumed from a cursor that no record covers; a new walk
    reads through its own record's seq. `keys` (`cursor_keys`, the current one first) are those the
    mark's binding may have been made with: a walk begun before a key rotation is still the same walk.
    """
    keys = keys or [cursor_key(storage, actor.org_id)]
    binding = query_digest(storage, actor, query, keys[0])[:32]  # 128 bits: enough, and the cursor stays short
    now = clock()
    if (mark is not None and _same_binding(storage, actor, query, mark.binding, current=binding, retired=keys[1:])
            and not _expired(datetime.fromtimestamp(mark.started, UTC), now, storage)):
        return ReadTrace(None, mark)
    payload: dict[str, Any] = {**query, "mode": "walk",
                               "snapshot": "own_seq" if snapshot is None else snapshot}
    if mark is not None:
        payload["continues"] = mark.record_uuid
    record = record_read(storage, actor.org_id, origin, actor=actor, log_entry=log_entry, payload=payload)
    return ReadTrace(record, WalkMark(record.uuid, binding, int(now.timestamp())))


def _same_binding(storage: Storage, actor: Principal, query: dict[str, Any], marked: str, *, current: str,
                  retired: list[bytes]) -> bool:
    if hmac.compare_digest(marked, current):
        return True
    return any(hmac.compare_digest(marked, query_digest(storage, actor, query, key)[:32]) for key in retired)


def trace_poll(storage: Storage, origin: Origin, *, actor: Principal, log_entry: str, query: dict[str, Any],
               after_seq: int) -> ReadTrace:
    """Record a poll, unless the reader's session with this filter set (`query`, without the position
    `after_seq`) is younger than the session time."""
    reader, digest = reader_of(actor), query_digest(storage, actor, query)
    session = find_session(storage, actor.org_id, reader, digest)
    now = clock()
    if session is not None and not _expired(session.started_at, now, storage):
        return ReadTrace(None)
    record = record_read(storage, actor.org_id, origin, actor=actor, log_entry=log_entry,
                         payload={**query, "mode": "poll", "after_seq": after_seq})
    # After the record's commit: a session row never points at a record that is not there.
    start_session(storage, actor.org_id, reader, digest, ReadSession(record.uuid, now))
    return ReadTrace(record)
