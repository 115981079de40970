"""PostgreSQL ingest tuning (issue #14).

Reserved in the revision chain so that work in progress in parallel keeps one Alembic head;
a revision whose work has not landed changes nothing.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03
"""

from __future__ import annotations

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
