"""Initial schema: organizations, principals, API keys, events (append-only), chain heads, checkpoints.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from auditkeep.storage.types import JsonText, Timestamp

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_EVENT_COLUMNS = """
    org_id integer NOT NULL,
    seq bigint NOT NULL,
    event_uuid varchar(36) NOT NULL,
    "timestamp" timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    action text, client_ip varchar(45) NOT NULL, is_support_user boolean, log_entry text,
    object_id bigint, object_type text, payload json, referer text, request_type text, source text,
    status text, url text NOT NULL, user_agent text, user_email text, user_id bigint,
    prev_hash varchar(64) NOT NULL, hash varchar(64) NOT NULL
"""


def _events_postgresql() -> None:
    # Range-partitioned by time; a partitioned table's unique keys must contain the partition key, so
    # (org_id, event_uuid) is enforced by ingest under the organization's head lock instead.
    op.execute(
        f'CREATE TABLE events ({_EVENT_COLUMNS}, PRIMARY KEY (org_id, seq, "timestamp")) '
        'PARTITION BY RANGE ("timestamp")'
    )
    op.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")
    op.execute("CREATE INDEX ix_events_org_seq ON events (org_id, seq)")
    op.execute("CREATE INDEX ix_events_org_uuid ON events (org_id, event_uuid)")
    op.execute('CREATE INDEX ix_events_org_ts_seq ON events (org_id, "timestamp", seq)')
    op.execute(
        """
        CREATE FUNCTION auditkeep_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM retention_guard WHERE org_id = OLD.org_id) THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'events are append-only (% refused)', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events "
        "FOR EACH ROW EXECUTE FUNCTION auditkeep_events_append_only()"
    )
    op.execute(
        "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
        "FOR EACH STATEMENT EXECUTE FUNCTION auditkeep_events_append_only()"
    )


def _events_sqlite() -> None:
    op.create_table(
        "events",
        sa.Column("org_id", sa.Integer, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("event_uuid", sa.String(36), nullable=False),
        sa.Column("timestamp", Timestamp, nullable=False),
        sa.Column("received_at", Timestamp, nullable=False),
        sa.Column("action", sa.Text),
        sa.Column("client_ip", sa.String(45), nullable=False),
        sa.Column("is_support_user", sa.Boolean),
        sa.Column("log_entry", sa.Text),
        sa.Column("object_id", sa.BigInteger),
        sa.Column("object_type", sa.Text),
        sa.Column("payload", JsonText),
        sa.Column("referer", sa.Text),
        sa.Column("request_type", sa.Text),
        sa.Column("source", sa.Text),
        sa.Column("status", sa.Text),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("user_agent", sa.Text),
        sa.Column("user_email", sa.Text),
        sa.Column("user_id", sa.BigInteger),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "seq", name="pk_events"),
    )
    op.create_index("ix_events_org_uuid", "events", ["org_id", "event_uuid"], unique=True)
    op.create_index("ix_events_org_ts_seq", "events", ["org_id", "timestamp", "seq"])
    op.execute(
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
        "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
    )
    op.execute(
        "CREATE TRIGGER events_no_delete BEFORE DELETE ON events "
        "WHEN NOT EXISTS (SELECT 1 FROM retention_guard WHERE org_id = OLD.org_id) "
        "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
    )


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("retention_days", sa.Integer),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.UniqueConstraint("name", name="uq_organizations_name"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("is_support", sa.Boolean, nullable=False),
        sa.Column("password_hash", sa.String(200)),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.UniqueConstraint("org_id", "email", name="uq_users_org_id_email"),
    )
    op.create_table(
        "service_accounts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.UniqueConstraint("org_id", "name", name="uq_service_accounts_org_id_name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id")),
        sa.Column("service_account_id", sa.Integer, sa.ForeignKey("service_accounts.id")),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("last_used_at", Timestamp),
        sa.Column("revoked_at", Timestamp),
        sa.UniqueConstraint("digest", name="uq_api_keys_digest"),
        sa.CheckConstraint("(user_id IS NULL) <> (service_account_id IS NULL)", name="ck_api_keys_one_owner"),
    )
    op.create_index("ix_api_keys_org_id_prefix", "api_keys", ["org_id", "prefix"])
    op.create_table(
        "chain_heads",
        sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("merkle_frontier", sa.Text, nullable=False),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("tree_size", sa.BigInteger, nullable=False),
        sa.Column("root_hash", sa.String(64), nullable=False),
        sa.Column("chain_head", sa.String(64), nullable=False),
        sa.Column("issued_at", sa.String(27), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(200), nullable=False),
    )
    op.create_index("ix_checkpoints_org_id_tree_size", "checkpoints", ["org_id", "tree_size"])
    op.create_table("retention_guard", sa.Column("org_id", sa.Integer, primary_key=True))
    if op.get_bind().dialect.name == "postgresql":
        _events_postgresql()
    else:
        _events_sqlite()


def downgrade() -> None:
    raise NotImplementedError("auditkeep does not downgrade an audit log's schema")
