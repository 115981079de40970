"""Indexes for the query filters of issue #4 (filters, cursors, after_seq), and `client_ip_key`.

Each index is `(org_id, column, timestamp, seq)`: an equality on the column yields its matches already in
walk order, so a `limit=100` page reads about 100 index entries whatever the table's size. They lead with
org_id like every key on `events` (issue #2). Which columns get one, and what each costs at ingest, is
measured in docs/benchmarks.md ("Queries and exports") and explained at FILTER_INDEXES.

`client_ip_key` (storage/addresses.py) makes an address or CIDR filter an index probe or range on both
backends; SQLite has no inet type.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# (index name, column, partial-index condition by dialect). `action` is also matched by prefix, a range
# compared by code point; on PostgreSQL that takes the "C" collation, so the index carries it.
#
# What an index costs at ingest depends on its cardinality (bench/query_bench.py ingest-cost, SQLite, CPU
# time per event): four on high-cardinality columns (user_email, user_id, object_id, client_ip_key) cut
# ingest by about 47%, because each event lands on a different B-tree page; six on low-cardinality
# columns by about 21%, because their inserts append to a few hot pages. The high-cardinality ones are
# the point of filtering, so they stay; of the low-cardinality columns, action and object_type have rare
# values worth finding fast ("sso.config_change") and get full indexes. source, status, request_type and
# is_support_user have a handful of values, so a walk of the (org_id, timestamp, seq) index finds 100
# matches of a common value quickly; the two rare values investigations ask for, support staff's events
# and failures, get partial indexes that only those rows enter.
FILTER_INDEXES: tuple[tuple[str, str, dict[str, str] | None], ...] = (
    ("ix_events_org_action_ts", "action", None),
    ("ix_events_org_object_type_ts", "object_type", None),
    ("ix_events_org_user_email_ts", "user_email", None),
    ("ix_events_org_user_id_ts", "user_id", None),
    ("ix_events_org_object_id_ts", "object_id", None),
    ("ix_events_org_client_ip_key_ts", "client_ip_key", None),
    ("ix_events_org_support_ts", "", {"sqlite": "is_support_user = 1", "postgresql": "is_support_user"}),
    ("ix_events_org_failure_ts", "", {"sqlite": "status = 'failure'", "postgresql": "status = 'failure'"}),
)

_SQLITE_NO_UPDATE = (
    "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
    "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
)


def _backfill_ip_keys(dialect: str) -> None:
    """Fill client_ip_key of events stored before this revision (the append-only trigger is lifted for
    this one statement inside the migration's transaction, then restored)."""
    from auditkeep.storage.addresses import ip_key

    bind = op.get_bind()
    rows = bind.exec_driver_sql("SELECT DISTINCT client_ip FROM events").all()
    if not rows:
        return
    if dialect == "sqlite":
        op.execute("DROP TRIGGER events_no_update")
    else:
        op.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
    mark = "?" if dialect == "sqlite" else "%s"
    bind.exec_driver_sql(
        f"UPDATE events SET client_ip_key = {mark} WHERE client_ip = {mark}",
        [(ip_key(r[0]), r[0]) for r in rows],
    )
    if dialect == "sqlite":
        op.execute(_SQLITE_NO_UPDATE)
    else:
        op.execute("ALTER TABLE events ENABLE TRIGGER events_append_only")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        # A plain ADD COLUMN (no batch rebuild: that would drop the append-only triggers).
        op.execute("ALTER TABLE events ADD COLUMN client_ip_key BLOB")
    else:
        op.add_column("events", sa.Column("client_ip_key", sa.LargeBinary))
    _backfill_ip_keys(dialect)
    for name, column, partial in FILTER_INDEXES:
        col = 'action COLLATE "C"' if column == "action" and dialect == "postgresql" else column
        cols = f'org_id, {col}, "timestamp", seq' if col else 'org_id, "timestamp", seq'
        where = f" WHERE {partial[dialect]}" if partial else ""
        op.execute(f"CREATE INDEX {name} ON events ({cols}){where}")


def downgrade() -> None:
    raise NotImplementedError("auditkeep does not downgrade an audit log's schema")
