"""API keys get a name and an optional expiry (issue #9).

Existing keys are named from the event that created them: the ones `auditkeep demo` minted (its
`api_key.create` events read "Demo API key …") become "demo (make run)", so the demo can tell them from
keys people made; every other existing key keeps an empty name (shown as "unnamed"). None expires.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from auditkeep.storage.types import Timestamp

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

DEMO_KEY_NAME = "demo (make run)"  # auditkeep.cli.demo.DEMO_KEY_NAME, frozen here as of this revision


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("name", sa.String(100), nullable=False, server_default=""))
        batch.add_column(sa.Column("expires_at", Timestamp, nullable=True))
    op.execute(
        sa.text(
            "UPDATE api_keys SET name = :name WHERE id IN ("
            " SELECT e.object_id FROM events e JOIN organizations o ON o.id = e.org_id"
            " WHERE o.name = 'demo' AND e.org_id = api_keys.org_id AND e.action = 'api_key.create'"
            " AND e.object_type = 'api_key' AND e.source = 'cli' AND e.log_entry LIKE 'Demo API key %')"
        ).bindparams(name=DEMO_KEY_NAME)
    )


def downgrade() -> None:
    raise NotImplementedError("auditkeep does not downgrade an audit log's schema")
