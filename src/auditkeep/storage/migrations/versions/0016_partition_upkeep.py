"""Partition upkeep (issue #14): `job_leases`, one row per job that one node at a time runs.

A job row names its lease holder and until when (storage/leases.py) and when the job last ran, so that of
several `auditkeep serve` nodes sharing a database only one keeps the events table's partitions, and only
once per interval whichever node holds the lease. Made on both backends (SQLite has no partitions, but one
schema for both keeps the migrations one chain).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from auditkeep.storage.types import Timestamp

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "job_leases",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("lease_owner", sa.String(120), nullable=True),
        sa.Column("lease_until", Timestamp, nullable=True),
        sa.Column("last_run_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_job_leases"),
    )
    op.bulk_insert(table, [{"id": "partitions", "lease_owner": None, "lease_until": None, "last_run_at": None}])


def downgrade() -> None:
    op.drop_table("job_leases")
