"""Integrity anchors (issue #3): the signed Merkle compact range kept at a retention purge boundary.

Before retention (issue #4) deletes an organization's events up to seq N, `anchor_before_purge` stores
the compact range of the tree over seq 1..N with a checkpoint signed at tree size N. Verification then
starts at seq N + 1 from that chain head and compact range, so the Merkle root stays computable.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "integrity_anchors",
        sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("tree_size", sa.BigInteger, nullable=False),
        sa.Column("merkle_frontier", sa.Text, nullable=False),
        sa.Column("root_hash", sa.String(64), nullable=False),
        sa.Column("chain_head", sa.String(64), nullable=False),
        sa.Column("issued_at", sa.String(27), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "tree_size", name="pk_integrity_anchors"),
    )


def downgrade() -> None:
    raise NotImplementedError("auditkeep does not downgrade an audit log's schema")
