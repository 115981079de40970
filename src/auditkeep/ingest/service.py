"""Recording events: idempotency, sequencing and chaining inside one transaction per batch.

Everything for a batch happens under the organization's head lock (storage.event_writer): look up
client-supplied uuids, assign seq, compute each event's chain hash and Merkle leaf, insert, move the
head. Concurrent writers of one organization therefore produce one linear chain (no forks, no gaps),
and the commit that returns is the moment the events are durable.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from orjson import Fragment

from auditkeep.errors import ConflictError
from auditkeep.ingest.checkpointing import maybe_checkpoint
from auditkeep.ingest.validation import NewEvent
from auditkeep.integrity.canonical import canonical_bytes
from auditkeep.integrity.chain import chain_hash
from auditkeep.integrity.merkle import CompactRange, leaf_hash
from auditkeep.storage import Storage
from auditkeep.storage.events import ChainHead
from auditkeep.storage.types import format_timestamp


def _same_content(new: NewEvent, stored: dict[str, Any]) -> bool:
    # A retry may omit what the server filled in (timestamp defaults to the time received), so only the
    # fields the client actually sent are compared.
    return all(new.log[name] == stored[name] for name in new.sent if name != "event_uuid")


def _dedupe(events: list[NewEvent], stored: dict[str, dict[str, Any]]) -> list[NewEvent]:
    """The events not stored yet, in order; ConflictError for a uuid reused with other content."""
    fresh: list[NewEvent] = []
    seen: dict[str, NewEvent] = {}
    for index, event in enumerate(events):
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
        fresh.append(event)
    return fresh


def record_events(storage: Storage, org_id: int, events: list[NewEvent]) -> list[str]:
    """Append validated events to `org_id`'s log; returns their uuids in input order."""
    received_at = datetime.now(UTC)
    ts_param = storage.backend.ts_param
    received = ts_param(format_timestamp(received_at))
    given = [e.log["event_uuid"] for e in events if e.uuid_given]
    with storage.event_writer(org_id) as writer:
        stored = writer.find(given) if given else {}
        fresh = _dedupe(events, stored)
        head = writer.head
        seq, prev = head.seq, bytes.fromhex(head.hash)
        tree = CompactRange.from_text(head.seq, head.merkle_frontier)
        rows: list[tuple[Any, ...]] = []
        for event in fresh:
            seq += 1
            log = event.log
            # The payload's stored text is already canonical: hash it as is (see integrity/canonical.py).
            fields = log if event.payload_json is None else {**log, "payload": Fragment(event.payload_json)}
            digest = chain_hash(prev, canonical_bytes(fields, seq))
            tree.append(leaf_hash(digest))
            rows.append(
                (
                    org_id, seq, log["event_uuid"], ts_param(log["timestamp"]), received, log["action"],
                    log["client_ip"], log["is_support_user"], log["log_entry"], log["object_id"],
                    log["object_type"], event.payload_json, log["referer"], log["request_type"], log["source"],
                    log["status"], log["url"], log["user_agent"], log["user_email"], log["user_id"],
                    prev.hex(), digest.hex(),
                )
            )
            prev = digest
        if rows:
            writer.insert(rows)
            writer.set_head(ChainHead(seq, prev.hex(), tree.to_text()))
    if rows:
        # After the commit, outside the head lock: a due checkpoint never holds up other writers.
        maybe_checkpoint(storage, org_id, seq)
    return [e.log["event_uuid"] for e in events]
