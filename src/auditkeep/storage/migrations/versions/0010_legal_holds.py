"""Legal holds and per-action retention rules (issue #12).

Reserved in the revision chain so that work in progress on parallel branches keeps one Alembic head;
a revision whose work has not landed changes nothing.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
