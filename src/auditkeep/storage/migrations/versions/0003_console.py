"""Console tables of issue #5 (sessions, sign-in throttling).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from auditkeep.storage.types import Timestamp

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("token_digest", sa.String(64), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.Column("client_ip", sa.String(45), nullable=False),
        sa.Column("user_agent", sa.String(512)),
        sa.UniqueConstraint("token_digest", name="uq_console_sessions_token_digest"),
    )
    op.create_index("ix_console_sessions_org_id_user_id", "console_sessions", ["org_id", "user_id"])
    op.create_table(
        "signin_throttle",
        sa.Column("key", sa.String(80), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_failure_at", Timestamp, nullable=False),
        sa.Column("locked_until", Timestamp),
    )


def downgrade() -> None:
    raise NotImplementedError("auditkeep does not downgrade an audit log's schema")
