"""Integrity records (issue #3): stored checkpoints, purge-boundary anchors, and chain hashes for proofs.

Checkpoints and anchors come back as plain dicts of their signed members (`org` is the organization's
name) so that ingest/ can validate them into `integrity.checkpoints.Checkpoint` without storage/
importing integrity/.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from auditkeep.errors import NotFoundError
from auditkeep.schemas.audit_logs import LOG_FIELDS
from auditkeep.storage.base import Storage
from auditkeep.storage.tables import chain_heads, checkpoints, events, integrity_anchors, merkle_nodes, organizations

T = TypeVar("T")
CHECKPOINT_FIELDS = ("tree_size", "root_hash", "chain_head", "issued_at", "key_id", "signature")


@dataclass(frozen=True, slots=True)
class HeadState:
    """An organization's chain head row: last seq, its hash, the compact range, the first stored seq."""

    org_name: str
    seq: int
    hash: str
    merkle_frontier: str
    first_seq: int


def read_head(conn: sa.Connection, org_id: int) -> HeadState:
    row = conn.execute(
        sa.select(organizations.c.name, chain_heads.c.seq, chain_heads.c.hash, chain_heads.c.merkle_frontier,
                  chain_heads.c.first_seq)
        .join(chain_heads, chain_heads.c.org_id == organizations.c.id)
        .where(organizations.c.id == org_id)
    ).first()
    if row is None:
        raise NotFoundError(f"unknown organization id {org_id}")
    return HeadState(row[0], int(row[1]), row[2], row[3], int(row[4]))


def _checkpoint_select() -> sa.Select[Any]:
    return sa.select(organizations.c.name.label("org"), *(checkpoints.c[f] for f in CHECKPOINT_FIELDS)).join(
        organizations, organizations.c.id == checkpoints.c.org_id
    )


def _as_dict(row: sa.Row[Any]) -> dict[str, Any]:
    record = dict(row._mapping)
    record["tree_size"] = int(record["tree_size"])
    return record


def insert_checkpoint(conn: sa.Connection, org_id: int, record: dict[str, Any]) -> None:
    """Store a signed checkpoint (`record` holds CHECKPOINT_FIELDS; other members are ignored)."""
    conn.execute(checkpoints.insert().values(org_id=org_id, **{f: record[f] for f in CHECKPOINT_FIELDS}))


def latest_checkpoint(conn: sa.Connection, org_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        _checkpoint_select()
        .where(checkpoints.c.org_id == org_id)
        .order_by(checkpoints.c.tree_size.desc(), checkpoints.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else _as_dict(row)


def list_checkpoints(
    conn: sa.Connection,
    org_id: int,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    issued_from: str | None = None,
    issued_before: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Checkpoints by tree size (inclusive bounds) and issue time (`YYYY-…Z` text, half-open), oldest first."""
    q = _checkpoint_select().where(checkpoints.c.org_id == org_id)
    if min_size is not None:
        q = q.where(checkpoints.c.tree_size >= min_size)
    if max_size is not None:
        q = q.where(checkpoints.c.tree_size <= max_size)
    # issued_at is fixed-width UTC text, so text order is time order.
    if issued_from is not None:
        q = q.where(checkpoints.c.issued_at >= issued_from)
    if issued_before is not None:
        q = q.where(checkpoints.c.issued_at < issued_before)
    q = q.order_by(checkpoints.c.tree_size, checkpoints.c.id)
    if limit is not None:
        q = q.limit(limit)
    return [_as_dict(row) for row in conn.execute(q)]


def insert_anchor(conn: sa.Connection, org_id: int, record: dict[str, Any], merkle_frontier: str) -> None:
    """Store the signed checkpoint and compact range at a purge boundary (replacing one at the same size)."""
    conn.execute(
        integrity_anchors.delete().where(
            integrity_anchors.c.org_id == org_id, integrity_anchors.c.tree_size == record["tree_size"]
        )
    )
    conn.execute(
        integrity_anchors.insert().values(
            org_id=org_id, merkle_frontier=merkle_frontier, **{f: record[f] for f in CHECKPOINT_FIELDS}
        )
    )


def get_anchor(conn: sa.Connection, org_id: int, tree_size: int) -> tuple[dict[str, Any], str] | None:
    """The anchor at exactly `tree_size`: (its checkpoint's members, its compact range text)."""
    row = conn.execute(
        sa.select(organizations.c.name.label("org"), integrity_anchors)
        .join(organizations, organizations.c.id == integrity_anchors.c.org_id)
        .where(integrity_anchors.c.org_id == org_id, integrity_anchors.c.tree_size == tree_size)
    ).first()
    if row is None:
        return None
    record = {f: row._mapping[f] for f in ("org", *CHECKPOINT_FIELDS)}
    record["tree_size"] = int(record["tree_size"])
    return record, row._mapping["merkle_frontier"]


def event_seq(conn: sa.Connection, org_id: int, event_uuid: str) -> tuple[int, str]:
    """(seq, hash) of the event with this uuid in this organization; NotFoundError otherwise."""
    row = conn.execute(
        sa.select(events.c.seq, events.c.hash).where(events.c.org_id == org_id, events.c.event_uuid == event_uuid)
    ).first()
    if row is None:
        raise NotFoundError(f"no event {event_uuid} in this organization")
    return int(row[0]), row[1]


def iter_hashes(conn: sa.Connection, org_id: int, after_seq: int, upto_seq: int) -> Iterator[tuple[int, str]]:
    """(seq, hash) of stored events with after_seq < seq <= upto_seq, in seq order."""
    q = (
        sa.select(events.c.seq, events.c.hash)
        .where(events.c.org_id == org_id, events.c.seq > after_seq, events.c.seq <= upto_seq)
        .order_by(events.c.seq)
    )
    for seq, digest in conn.execution_options(yield_per=10_000).execute(q):
        yield int(seq), digest


def iter_hash_chunks(conn: sa.Connection, org_id: int, after_seq: int, upto_seq: int) -> Iterator[Sequence[str]]:
    """The `hash` of stored events with after_seq < seq <= upto_seq, in seq order, in lists (for Merkle
    proofs). (org_id, seq) is the primary key, so as many hashes as seqs in the range means none is missing.

    On SQLite through the driver's own cursor, in the caller's transaction: 0.4-0.5 CPU s per 1,000,000
    where SQLAlchemy's result rows took 1.3-1.4. PostgreSQL streams through SQLAlchemy (a plain psycopg
    cursor would fetch every row into memory first)."""
    if conn.dialect.name == "sqlite":
        cursor = conn.connection.cursor()
        try:
            cursor.execute("SELECT hash FROM events WHERE org_id = ? AND seq > ? AND seq <= ? ORDER BY seq",
                           (org_id, after_seq, upto_seq))
            while rows := cursor.fetchmany(10_000):
                yield [row[0] for row in rows]
        finally:
            cursor.close()
        return
    q = (
        sa.select(events.c.hash)
        .where(events.c.org_id == org_id, events.c.seq > after_seq, events.c.seq <= upto_seq)
        .order_by(events.c.seq)
    )
    yield from conn.execution_options(yield_per=10_000).execute(q).scalars().partitions()


def merkle_node(conn: sa.Connection, org_id: int, height: int, index: int) -> str | None:
    """The cached root of perfect subtree (height, index), hex, or None (ingest/proofs.py)."""
    found: str | None = conn.execute(
        sa.select(merkle_nodes.c.hash).where(
            merkle_nodes.c.org_id == org_id, merkle_nodes.c.height == height, merkle_nodes.c.node_index == index
        )
    ).scalar()
    return found


def merkle_nodes_within(
    conn: sa.Connection, org_id: int, start: int, end: int, *, min_height: int, max_height: int
) -> list[tuple[int, int, str]]:
    """(height, index, hex root) of the cached perfect subtrees of min_height..max_height that lie inside
    leaves [start, end): one primary key range per height."""
    q = sa.select(merkle_nodes.c.height, merkle_nodes.c.node_index, merkle_nodes.c.hash).where(
        merkle_nodes.c.org_id == org_id,
        sa.or_(*(
            sa.and_(merkle_nodes.c.height == h, merkle_nodes.c.node_index >= -(-start >> h),
                    merkle_nodes.c.node_index < end >> h)
            for h in range(min_height, max_height + 1)
        )),
    )
    return [(int(h), int(i), digest) for h, i, digest in conn.execute(q)]


def insert_merkle_nodes(conn: sa.Connection, org_id: int, nodes: Sequence[tuple[int, int, str]]) -> None:
    """Cache (height, index, hex root) perfect subtree roots; a row another proof stored first is left as it
    is (the same subtree has the same root), so concurrent proofs never fail on the primary key."""
    if not nodes:
        return
    insert = sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
    conn.execute(
        insert(merkle_nodes).on_conflict_do_nothing(),
        [{"org_id": org_id, "height": h, "node_index": i, "hash": digest} for h, i, digest in nodes],
    )


def chain_rows_sql(dialect: str) -> str:
    """Raw rows (LOG_FIELDS, seq, prev_hash, hash, personal_salt, personal_commitment; payload as stored
    text) of one organization with after_seq < seq <= upto_seq, in seq order; parameters (org_id,
    after_seq, upto_seq) in the driver's style. A verification worker runs it on its own driver connection
    (ingest/segments.py)."""
    cols = ", ".join(f'"{f}"' if f == "timestamp" else f for f in LOG_FIELDS)
    if dialect == "postgresql":
        # The timestamp as the API writes it (storage.types.format_timestamp), made by the database: a
        # timestamptz was parsed into a datetime by psycopg and formatted again in Python. The self-watch,
        # which runs in the serve worker beside ingest, then cost 14.8 CPU µs an event there and 2.6 in the
        # database; now 11.0 and 2.9 (bench/jobs_cost.py, 100,000 events, medians of 3, load ~4; issue #14).
        api_text = """to_char("timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
        cols = cols.replace('"timestamp"', api_text)
        cols = cols.replace("payload", "payload::text")
    mark = "?" if dialect == "sqlite" else "%s"
    return (f"SELECT {cols}, seq, prev_hash, hash, personal_salt, personal_commitment FROM events "
            f"WHERE org_id = {mark} AND seq > {mark} AND seq <= {mark} ORDER BY seq")


def dbapi_target(storage: Storage) -> str | None:
    """What a plain driver connection to the same data needs (ingest/segments.py): SQLite's database file
    or a libpq connection string; None for an in-memory SQLite database (another connection would not
    see it)."""
    url = sa.make_url(storage.url)
    if storage.dialect == "sqlite":
        database = url.database
        return database if database and database != ":memory:" and not database.startswith("file:") else None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def closing_iter(iterable: Iterator[T]) -> Generator[Iterator[T], None, None]:
    """Close a generator when the walk over it stops early (a server-side cursor must close before its
    transaction ends, not at garbage collection)."""
    try:
        yield iterable
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
