"""The full-text search index behind `q` (issue #13).

Reserved in the revision chain so that work in progress on parallel branches keeps one Alembic head;
a revision whose work has not landed changes nothing.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
