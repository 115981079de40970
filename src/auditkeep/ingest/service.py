"""Recording events: idempotency, sequencing and chaining inside one transaction per batch.

Everything that needs the organization's head lock (storage.event_writer) happens under it: assign seq,
hash each event onto the chain and into the Merkle compact range, insert, move the head. Concurrent
writers of one organization therefore produce one linear chain (no forks, no gaps), and the commit that
returns is the moment the events are durable. What does not need the lock is done before taking it: each
event's canonical bytes (all but its seq) and its row, so the lock is held for the hashing and the
database's own work (docs/benchmarks.md, issues #2 and #3).

Idempotency: where the database refuses a stored uuid itself (SQLite's unique index), client-supplied
uuids are not looked up first. The batch goes in inside a savepoint; only if the index refuses one is it
rolled back, the stored events read, and the fresh ones chained and inserted. The index probe the insert
makes anyway thus replaces a lookup of every uuid in the common case, a batch of new events. PostgreSQL
(no unique key over a partitioned table's uuids) and batches that repeat a uuid look up first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from orjson import Fragment

from auditkeep.errors import ConflictError
from auditkeep.ingest.checkpointing import maybe_checkpoint
from auditkeep.ingest.validation import NewEvent
from auditkeep.integrity.canonical import (
    PERSONAL_FIELDS,
    SALT_BYTES,
    canonical_parts,
    is_erased_view,
    v2_parts,
)
from auditkeep.integrity.chain import chain_hash
from auditkeep.integrity.merkle import CompactRange, leaf_hash
from auditkeep.storage import Storage
from auditkeep.storage.addresses import ip_key
from auditkeep.storage.events import ChainHead
from auditkeep.storage.types import format_timestamp


@dataclass(slots=True)
class _Prepared:
    """An event made ready outside the head lock: its canonical bytes around seq, and its row's values."""

    event: NewEvent
    head: bytes  # canonical bytes up to the digits of seq
    tail: bytes  # and after them
    values: tuple[Any, ...]  # the row's columns event_uuid .. user_id (storage.events.EventWriter.insert)
    ip_key: bytes | None
    salt: str | None  # personal_salt as hex (canonical form version 2), None for version 1


# The canonical form new events are written in (docs/integrity.md §1). Version 1 stays readable and
# verifiable; writing it is only for benchmarks comparing the two and tests of logs made before version 2.
WRITE_VERSION = 2


def _prepare(event: NewEvent, received: object, ts_param: Callable[[str], object], salt: bytes) -> _Prepared:
    log = event.log
    # The payload's stored text is already canonical: hash it as is (see integrity/canonical.py). Validated
    # events carry it as a fragment already; self-audit events carry the payload itself.
    payload, text = log["payload"], event.payload_json
    fields = log if text is None or type(payload) is Fragment else {**log, "payload": Fragment(text)}
    # Plain by construction (no float field, fixed ASCII names, a canonical payload fragment): no re-check.
    salt_hex: str | None = None
    if WRITE_VERSION == 2:
        # The personal fields enter the hash only through their salted commitment, so erasing them later
        # (ingest/erasure.py) leaves every hash recomputable (issue #12).
        _, head, tail = v2_parts(fields, salt)
        salt_hex = salt.hex()
    else:
        head, tail = canonical_parts(fields, plain=True)
    values = (
        log["event_uuid"], ts_param(log["timestamp"]), received, log["action"], log["client_ip"],
        log["is_support_user"], log["log_entry"], log["object_id"], log["object_type"], event.payload_json,
        log["referer"], log["request_type"], log["source"], log["status"], log["url"], log["user_agent"],
        log["user_email"], log["user_id"],
    )
    return _Prepared(event, head, tail, values, ip_key(log["client_ip"]), salt_hex)


def _chain(org_id: int, head: ChainHead, batch: list[_Prepared],
           received: object | None = None) -> tuple[list[tuple[Any, ...]], ChainHead]:
    """The rows of `batch` appended after `head`, with seq, prev_hash and hash; and the head after them.
    `received`, when given, replaces the received_at the rows were prepared with."""
    seq, prev_hex = head.seq, head.hash
    prev = bytes.fromhex(prev_hex)
    tree = CompactRange.from_text(head.seq, head.merkle_frontier)
    rows: list[tuple[Any, ...]] = []
    for item in batch:
        seq += 1
        digest = chain_hash(prev, b"%b%d%b" % (item.head, seq, item.tail))
        tree.append(leaf_hash(digest))
        digest_hex = digest.hex()
        values = item.values if received is None else (*item.values[:2], received, *item.values[3:])
        rows.append((org_id, seq, *values, prev_hex, digest_hex, item.ip_key, item.salt))
        prev, prev_hex = digest, digest_hex
    return rows, ChainHead(seq, prev_hex, tree.to_text())


def _same_content(new: NewEvent, stored: dict[str, Any]) -> bool:
    # A retry may omit what the server filled in (timestamp defaults to the time received), so only the
    # fields the client actually sent are compared. An erased event (issue #12) no longer has the personal
    # values to compare with: a retry whose other fields match is the same event, already present (a
    # client replaying its queue must not fail), and its values are not stored again (docs/integrity.md §13).
    erased = is_erased_view(stored)
    for name in new.sent:
        if erased and name in _PERSONAL:
            continue
        if name == "payload":
            payload = None if new.payload_json is None else orjson.loads(new.payload_json)
            if payload != stored["payload"]:
                return False
        elif name != "event_uuid" and new.log[name] != stored[name]:
            return False
    return True


_PERSONAL = frozenset(PERSONAL_FIELDS)


def _dedupe(batch: list[_Prepared], stored: dict[str, dict[str, Any]]) -> list[_Prepared]:
    """The events not stored yet, in order; ConflictError for a uuid reused with other content."""
    fresh: list[_Prepared] = []
    seen: dict[str, NewEvent] = {}
    for index, item in enumerate(batch):
        event = item.event
        uuid = event.log["event_uuid"]
        earlier = stored.get(uuid)
        if earlier is None and uuid in seen:
            earlier = seen[uuid].log
        if earlier is not None:
            if not _same_content(event, earlier):
                raise ConflictError(
                    f"event_uuid {uuid} (index {index}) is already recorded with different content"
                )
            continue
        seen[uuid] = event
        fresh.append(item)
    return fresh


@dataclass(frozen=True, slots=True)
class Recorded:
    """What one batch did: every event's uuid in input order, and how many of them were new (the rest
    were already present: the same uuid and content, stored before or earlier in the batch)."""

    event_uuids: list[str]
    accepted: int

    @property
    def already_present(self) -> int:
        return len(self.event_uuids) - self.accepted


def record_batch(storage: Storage, org_id: int, events: list[NewEvent], *,
                 received_at: datetime | None = None,
                 also: Callable[[sa.Connection], object] | None = None) -> Recorded:
    """Append validated events to `org_id`'s log, all or nothing.

    `also` runs in the same transaction, under the head lock, before the events are appended: a change
    and the self-audit event that records it commit together or not at all (a legal hold is never placed
    without its `hold.create` on the record). If it raises, nothing is written.

    Every event is stamped `received_at` (default: now), raised to the head event's if that is later
    (another writer's clock, or this one stepped back): received_at never decreases along the chain, so
    retention by it deletes exactly a prefix (storage/retention.py, issue #9).
    """
    ts_param = storage.backend.ts_param
    received = ts_param(format_timestamp(received_at or datetime.now(UTC)))
    # One draw of the OS's randomness per batch, not per event (a syscall each): 16 bytes an event.
    salts = os.urandom(SALT_BYTES * len(events))
    batch = [_prepare(event, received, ts_param, salts[i * SALT_BYTES : (i + 1) * SALT_BYTES])
             for i, event in enumerate(events)]
    uuids = [event.log["event_uuid"] for event in events]
    given = [event.log["event_uuid"] for event in events if event.uuid_given]
    with storage.event_writer(org_id) as writer:
        floor: Any = writer.head_received_at  # the same type as `received`: text or datetime by backend
        later = floor if floor is not None and floor > received else None
        if also is not None:
            also(writer.conn)
        optimistic = bool(given) and writer.refuses_stored_uuids and len(set(uuids)) == len(uuids)
        if given and not optimistic:
            batch = _dedupe(batch, writer.find(given))
        rows, head = _chain(org_id, writer.head, batch, later)
        if not optimistic:
            writer.insert(rows)  # looked up, or only ids made here (auditkeep/ids.py), which are new
        elif not writer.insert_new(rows):
            batch = _dedupe(batch, writer.find(given))
            rows, head = _chain(org_id, writer.head, batch, later)
            writer.insert(rows)
        if rows:
            writer.set_head(head)
    if rows:
        # After the commit, outside the head lock: a due checkpoint never holds up other writers.
        maybe_checkpoint(storage, org_id, head.seq)
    return Recorded(uuids, len(rows))


def record_events(storage: Storage, org_id: int, events: list[NewEvent], *,
                  received_at: datetime | None = None,
                  also: Callable[[sa.Connection], object] | None = None) -> list[str]:
    """Append validated events to `org_id`'s log (see `record_batch`); returns their uuids in input order."""
    return record_batch(storage, org_id, events, received_at=received_at, also=also).event_uuids
