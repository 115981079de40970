"""Read sessions (issue #9): one `audit_logs.read` record per key's polling session, not one per poll.

A row says that `reader` (an API key, or a user or service account without one) polling with the filter
set `query_digest` is covered by the read record `record_uuid` written at `started_at`; polls within
AUDITKEEP_READ_SESSION_SECONDS of it write no record of their own (ingest/read_rules.py). The table
holds the state so that any worker on any node can tell, which an in-process cache could not. A lost
row costs only one more record.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from auditkeep.storage.types import Timestamp

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "read_sessions",
        sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("reader", sa.String(80), nullable=False),
        sa.Column("query_digest", sa.String(64), nullable=False),
        sa.Column("record_uuid", sa.String(36), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("org_id", "reader", "query_digest", name="pk_read_sessions"),
    )


def downgrade() -> None:
    raise NotImplementedError("auditkeep does not downgrade an audit log's schema")
