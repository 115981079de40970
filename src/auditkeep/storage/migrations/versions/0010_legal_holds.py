"""Legal holds and per-action retention rules (issue #12).

`legal_holds`: one row per hold, active until released (released rows stay, with who released it and
why); `retention_rules`: per-action maximum and minimum retention beside the organization's default
(storage/tables.py explains the columns).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from auditkeep.storage.types import Timestamp

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "legal_holds",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("user_email", sa.Text, nullable=True),
        sa.Column("user_id", sa.BigInteger, nullable=True),
        sa.Column("object_type", sa.Text, nullable=True),
        sa.Column("object_id", sa.BigInteger, nullable=True),
        sa.Column("start_ts", Timestamp, nullable=True),
        sa.Column("end_ts", Timestamp, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("released_at", Timestamp, nullable=True),
        sa.Column("released_by", sa.Text, nullable=True),
        sa.Column("release_reason", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_legal_holds"),
    )
    op.create_index("ix_legal_holds_org_id_released_at", "legal_holds", ["org_id", "released_at"])
    op.create_table(
        "retention_rules",
        sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("max_days", sa.Integer, nullable=True),
        sa.Column("min_days", sa.Integer, nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("org_id", "action", name="pk_retention_rules"),
    )


def downgrade() -> None:
    raise NotImplementedError("auditkeep does not downgrade an audit log's schema")
