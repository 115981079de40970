"""Seeding an organization's log and tampering with it behind the service's back (as a database admin).

SQLite: the append-only triggers are dropped and re-created around the edit. PostgreSQL: the superuser
disables the `events_append_only` trigger around the edit. Hashes are recomputed here without the code
under test (rfc8785 + hashlib), as an attacker with their own tools would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import rfc8785
import sqlalchemy as sa

from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.schemas.audit_logs import LOG_FIELDS
from auditkeep.schemas.events import MAX_EVENTS_PER_REQUEST
from auditkeep.storage import Storage
from auditkeep.storage.addresses import ip_key
from auditkeep.storage.events import iter_chain

ZERO = "0" * 64
_TRIGGERS = ("events_no_update", "events_no_delete")


def seed(storage: Storage, org_id: int, n: int, *, start: int = 0, received_at: datetime | None = None) -> list[str]:
    """Record `n` plausible events (varied fields, payloads) in one batch, received at `received_at`
    (default now); their uuids. More than a request's 10,000 are parsed in parts and still recorded in one
    transaction, so a reader sees none or all of them."""
    body = [
        {
            "action": f"document.{'update' if i % 2 else 'read'}", "client_ip": f"203.0.113.{i % 250}",
            "url": f"https://app.example.com/doc/{i}", "object_type": "document", "object_id": i,
            "user_email": "alice@example.com", "user_id": 7 + i % 3, "is_support_user": i % 5 == 0,
            "payload": {"n": i, "tags": ["a", "é"], "nested": {"ok": True}}, "log_entry": f"entry {i} ✓",
            "timestamp": f"2024-05-01T12:{i // 60 % 60:02d}:{i % 60:02d}.{i:06d}Z",
        }
        for i in range(start, start + n)
    ]
    now = datetime.now(UTC)
    events = [event for i in range(0, n, MAX_EVENTS_PER_REQUEST)
              for event in parse_events(orjson.dumps(body[i : i + MAX_EVENTS_PER_REQUEST]), now)]
    return record_events(storage, org_id, events, received_at=received_at)


# Retention purges by received_at (storage/retention.py): `seed_purgeable`'s first six events arrived before this.
PURGE_CUTOFF = "2024-05-01T12:00:06.000000Z"


def seed_purgeable(storage: Storage, org_id: int, n: int) -> list[str]:
    """`seed(n)` (n > 6) whose events 0..5 (seq 1..6 of a fresh organization) were received before
    PURGE_CUTOFF and the rest now, so a purge at the cutoff deletes seq 1..6."""
    early = seed(storage, org_id, 6, received_at=datetime(2024, 5, 1, 12, 0, 5, tzinfo=UTC))
    return early + seed(storage, org_id, n - 6, start=6)


@contextmanager
def tampering(storage: Storage) -> Iterator[sa.Connection]:
    """A write transaction in which the append-only guard on `events` is off."""
    with storage.engine.connect() as conn, conn.begin():
        if storage.dialect == "sqlite":
            ddl = [r[0] for r in conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name IN (?, ?)", _TRIGGERS)]
            assert len(ddl) == 2
            for name in _TRIGGERS:
                conn.exec_driver_sql(f"DROP TRIGGER {name}")
            yield conn
            for statement in ddl:
                conn.exec_driver_sql(statement)
        else:
            conn.exec_driver_sql("ALTER TABLE events DISABLE TRIGGER events_append_only")
            yield conn
            conn.exec_driver_sql("ALTER TABLE events ENABLE TRIGGER events_append_only")


def q(storage: Storage, sql: str) -> str:
    return sql if storage.dialect == "sqlite" else sql.replace("?", "%s")


def run(conn: sa.Connection, storage: Storage, sql: str, params: Sequence[Any] = ()) -> Any:
    return conn.exec_driver_sql(q(storage, sql), tuple(params))


def stored_row(conn: sa.Connection, storage: Storage, org_id: int, seq: int) -> dict[str, Any]:
    """Every stored column of one event, as the database holds it."""
    cols = '"timestamp", ' + ", ".join(c for c in _COLUMNS if c != '"timestamp"')
    if storage.dialect == "postgresql":
        cols = cols.replace("payload", "payload::text")  # the stored text, not the driver's parsed dict
    row = run(conn, storage, f"SELECT {cols} FROM events WHERE org_id = ? AND seq = ?", (org_id, seq)).one()
    names = ["timestamp", *(c for c in _COLUMNS if c != '"timestamp"')]
    return dict(zip(names, row, strict=True))


_COLUMNS = (
    "event_uuid", '"timestamp"', "received_at", "action", "client_ip", "is_support_user", "log_entry", "object_id",
    "object_type", "payload", "referer", "request_type", "source", "status", "url", "user_agent", "user_email",
    "user_id", "prev_hash", "hash", "client_ip_key",
)


def update_columns(conn: sa.Connection, storage: Storage, org_id: int, seq: int, values: dict[str, Any]) -> None:
    sets = ", ".join(f'"{k}" = ?' if k == "timestamp" else f"{k} = ?" for k in values)
    if storage.dialect == "postgresql" and "payload" in values:
        sets = sets.replace("payload = ?", "payload = ?::json")
    run(conn, storage, f"UPDATE events SET {sets} WHERE org_id = ? AND seq = ?", (*values.values(), org_id, seq))


def swap_rows(conn: sa.Connection, storage: Storage, org_id: int, a: int, b: int) -> None:
    """Swap every column but the seq between two events (the uuid via a placeholder: it is unique)."""
    row_a, row_b = stored_row(conn, storage, org_id, a), stored_row(conn, storage, org_id, b)
    update_columns(conn, storage, org_id, a, {"event_uuid": "00000000-0000-0000-0000-000000000000"})
    update_columns(conn, storage, org_id, b, row_a)
    update_columns(conn, storage, org_id, a, row_b)


def chained(logs: list[dict[str, Any]], first_seq: int, prev_hash: str) -> list[dict[str, Any]]:
    """Events with seq, prev_hash and hash as docs/integrity.md defines them (independent of src/)."""
    out = []
    for offset, log in enumerate(logs):
        seq = first_seq + offset
        fields = {name: log[name] for name in LOG_FIELDS}
        digest = hashlib.sha256(bytes.fromhex(prev_hash) + rfc8785.dumps({**fields, "seq": seq})).hexdigest()
        out.append({**fields, "seq": seq, "prev_hash": prev_hash, "hash": digest})
        prev_hash = digest
    return out


def rewrite_from(storage: Storage, org_id: int, seq: int, edit: Callable[[list[dict[str, Any]]], None]) -> None:
    """Replace the events from `seq` on with `edit(logs)` of them, re-chained and renumbered, and move the
    chain head to match: a rewrite that leaves a valid chain (only a checkpoint can expose it)."""
    from auditkeep.integrity.merkle import CompactRange, leaf_hash

    events = list(iter_chain(storage, org_id))
    keep, logs = events[: seq - 1], [{k: e[k] for k in LOG_FIELDS} for e in events[seq - 1 :]]
    edit(logs)
    new = chained(logs, seq, keep[-1]["hash"] if keep else ZERO)
    tree = CompactRange()
    for e in keep + new:
        tree.append(leaf_hash(bytes.fromhex(e["hash"])))
    with tampering(storage) as conn:
        run(conn, storage, "DELETE FROM events WHERE org_id = ? AND seq >= ?", (org_id, seq))
        for e in new:
            payload = None if e["payload"] is None else rfc8785.dumps(e["payload"]).decode()
            ts: Any = e["timestamp"] if storage.dialect == "sqlite" else datetime.fromisoformat(e["timestamp"])
            conn.exec_driver_sql(storage.backend.insert_events_sql(), (
                org_id, e["seq"], e["event_uuid"], ts, ts, e["action"], e["client_ip"], e["is_support_user"],
                e["log_entry"], e["object_id"], e["object_type"], payload, e["referer"], e["request_type"],
                e["source"], e["status"], e["url"], e["user_agent"], e["user_email"], e["user_id"],
                e["prev_hash"], e["hash"], ip_key(e["client_ip"]), None,  # written in canonical form version 1
            ))
        last = (keep + new)[-1] if keep + new else None
        run(conn, storage, "UPDATE chain_heads SET seq = ?, hash = ?, merkle_frontier = ? WHERE org_id = ?",
            (last["seq"] if last else 0, last["hash"] if last else ZERO, tree.to_text(), org_id))


def delete_checkpoints(storage: Storage, org_id: int) -> None:
    with storage.engine.connect() as conn, conn.begin():
        run(conn, storage, "DELETE FROM checkpoints WHERE org_id = ?", (org_id,))
