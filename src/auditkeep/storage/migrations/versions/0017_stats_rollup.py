"""Stats rollup (issue #13): per-hour counts that serve /api/v1/audit_logs/stats and the console chart.

Reserved in the revision chain so that work in progress in parallel keeps one Alembic head;
a revision whose work has not landed changes nothing.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

from __future__ import annotations

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
