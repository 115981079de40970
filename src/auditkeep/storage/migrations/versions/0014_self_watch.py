"""Self-watch: the continuous verifier's durable position (issue #13).

`integrity_watch`, one row per organization (storage/tables.py explains the columns): how far the
server's own watcher has verified the chain (seq, that event's hash and the Merkle compact range there),
the last checkpoint it compared, when it last ran a full verify, the failures it found and recorded, and
the lease that lets one node at a time watch the organization (storage/leases.py).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from auditkeep.storage.types import Timestamp

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "integrity_watch",
        sa.Column("id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("verified_seq", sa.BigInteger, nullable=False),
        sa.Column("verified_hash", sa.String(64), nullable=True),
        sa.Column("merkle_frontier", sa.Text, nullable=True),
        sa.Column("checkpoint_size", sa.BigInteger, nullable=False),
        sa.Column("full_verified_at", Timestamp, nullable=False),
        sa.Column("failures", sa.Text, nullable=False),
        sa.Column("lease_owner", sa.String(120), nullable=True),
        sa.Column("lease_until", Timestamp, nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_integrity_watch"),
    )


def downgrade() -> None:
    op.drop_table("integrity_watch")
