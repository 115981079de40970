"""Streams (issue #10): durable per-stream cursors over an organization's seq order, leased to one
forwarder at a time (storage/tables.py explains the columns).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from auditkeep.storage.types import Timestamp

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "streams",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("sealed_secrets", sa.Text, nullable=False),
        sa.Column("filter", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("delivered_seq", sa.BigInteger, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_delivery_at", Timestamp, nullable=True),
        sa.Column("next_attempt_at", Timestamp, nullable=True),
        sa.Column("lease_owner", sa.String(120), nullable=True),
        sa.Column("lease_until", Timestamp, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_streams"),
        sa.UniqueConstraint("org_id", "name", name="uq_streams_org_id_name"),
    )


def downgrade() -> None:
    op.drop_table("streams")
