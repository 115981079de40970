"""Alert rules and their evaluator's durable cursor (issue #13): `alert_rules` (each rule's cursor,
window state and lease) and `alert_firings` (the outbox of firings still to record and notify);
storage/tables.py explains the columns.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from auditkeep.storage.types import Timestamp

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("template", sa.String(64), nullable=True),
        sa.Column("filter", sa.Text, nullable=False),
        sa.Column("threshold_count", sa.Integer, nullable=False),
        sa.Column("window_seconds", sa.Integer, nullable=False),
        sa.Column("group_by", sa.Text, nullable=False),
        sa.Column("notify", sa.Text, nullable=False),
        sa.Column("sealed_secrets", sa.Text, nullable=False),
        sa.Column("cooldown_seconds", sa.Integer, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("evaluated_seq", sa.BigInteger, nullable=False),
        sa.Column("window_state", sa.Text, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("last_fired_at", Timestamp, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("lease_owner", sa.String(120), nullable=True),
        sa.Column("lease_until", Timestamp, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_rules"),
        sa.UniqueConstraint("org_id", "name", name="uq_alert_rules_org_id_name"),
    )
    op.create_table(
        "alert_firings",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("rule_id", sa.String(36), nullable=False),
        sa.Column("event_uuid", sa.String(36), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("recorded", sa.Boolean, nullable=False),
        sa.Column("pending", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", Timestamp, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("done_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alert_firings"),
    )
    op.create_index("ix_alert_firings_rule_id_done_at", "alert_firings", ["rule_id", "done_at"])


def downgrade() -> None:
    op.drop_index("ix_alert_firings_rule_id_done_at", table_name="alert_firings")
    op.drop_table("alert_firings")
    op.drop_table("alert_rules")
