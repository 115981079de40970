"""Erasure with salted commitments, canonical form version 2 (issue #12).

Reserved in the revision chain so that work in progress on parallel branches keeps one Alembic head;
a revision whose work has not landed changes nothing.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
