"""Merkle node cache (issue #3): the roots of perfect subtrees, so proofs stop re-reading every leaf.

A perfect subtree (RFC 9162: 2^height leaves starting at a multiple of 2^height) never changes once all
its leaves exist, because the log is append-only. Proofs store the ones of height >= 10 they compute
(ingest/proofs.py) and reuse them. Rows are a cache: deleting them costs only time.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "merkle_nodes",
        sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("height", sa.SmallInteger, nullable=False),
        sa.Column("node_index", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "height", "node_index", name="pk_merkle_nodes"),
    )


def downgrade() -> None:
    raise NotImplementedError("auditkeep does not downgrade an audit log's schema")
