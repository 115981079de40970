"""Self-watch: the continuous verifier's durable position (issue #13).

Reserved in the revision chain so that work in progress on parallel branches keeps one Alembic head;
a revision whose work has not landed changes nothing.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
