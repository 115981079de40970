"""Erasure with salted commitments, canonical form version 2 (issue #12).

`events` gains `personal_salt` (32 hex digits: the per-event salt of a version 2 event's personal
commitment, NULL for version 1 events and once erased) and `personal_commitment` (64 hex digits, set
only by an erasure, which nulls the salt and the personal values). `erasure_guard` plays for the erasure
what `retention_guard` plays for the purge: the erasure's transaction holds a row for its organization
while it updates, so the append-only trigger lets exactly that update through and refuses every other:
only inside such a transaction, only from a version 2 event not yet erased, only to the erased form (the
salt gone, a commitment set, client_ip and url "[erased]", the other personal fields and client_ip_key
NULL), and with every other column unchanged.

Downgrading restores the strict trigger and drops the columns: only for a database holding no version 2
events (their hashes need the salts).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Columns an erasure must leave as they are (client_ip_key is derived from client_ip and goes with it).
_KEPT = ("org_id", "seq", "event_uuid", '"timestamp"', "received_at", "action", "is_support_user", "object_id",
         "object_type", "request_type", "source", "status", "prev_hash", "hash")
_ERASED_NULL = ("log_entry", "payload", "referer", "user_agent", "user_email", "user_id", "client_ip_key",
                "personal_salt")


def _erasure_sql(same: str) -> str:
    """The condition under which an UPDATE is the sanctioned erasure; `same` is the null-safe equality."""
    return " AND ".join([
        "EXISTS (SELECT 1 FROM erasure_guard WHERE org_id = OLD.org_id)",
        "OLD.personal_salt IS NOT NULL",
        "OLD.personal_commitment IS NULL",
        "NEW.personal_commitment IS NOT NULL",
        "NEW.client_ip = '[erased]'",
        "NEW.url = '[erased]'",
        *(f"NEW.{c} IS NULL" for c in _ERASED_NULL),
        *(f"NEW.{c} {same} OLD.{c}" for c in _KEPT),
    ])


_SQLITE_STRICT = (
    "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
    "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
)
_SQLITE_ERASABLE = (
    f"CREATE TRIGGER events_no_update BEFORE UPDATE ON events WHEN NOT ({_erasure_sql('IS')}) "
    "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
)

_PG_STRICT = """
CREATE OR REPLACE FUNCTION auditkeep_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM retention_guard WHERE org_id = OLD.org_id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'events are append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$
"""
# Nested IFs: plpgsql does not promise to stop evaluating an AND early, and OLD is unassigned for TRUNCATE.
_PG_ERASABLE = f"""
CREATE OR REPLACE FUNCTION auditkeep_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF EXISTS (SELECT 1 FROM retention_guard WHERE org_id = OLD.org_id) THEN
            RETURN OLD;
        END IF;
    ELSIF TG_OP = 'UPDATE' THEN
        IF {_erasure_sql('IS NOT DISTINCT FROM')} THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'events are append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$
"""


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table("erasure_guard", sa.Column("org_id", sa.Integer, primary_key=True))
    op.add_column("events", sa.Column("personal_salt", sa.String(32), nullable=True))
    op.add_column("events", sa.Column("personal_commitment", sa.String(64), nullable=True))
    if dialect == "sqlite":
        op.execute("DROP TRIGGER events_no_update")
        op.execute(_SQLITE_ERASABLE)
    else:
        op.execute(_PG_ERASABLE)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER events_no_update")
        op.execute(_SQLITE_STRICT)
    else:
        op.execute(_PG_STRICT)
    op.execute("ALTER TABLE events DROP COLUMN personal_commitment")
    op.execute("ALTER TABLE events DROP COLUMN personal_salt")
    op.drop_table("erasure_guard")
