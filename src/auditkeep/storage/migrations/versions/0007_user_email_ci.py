"""`user_email` filters match case-insensitively (issue #9): the filter's index is on the lower-cased
address instead of the stored one.

`Ann@Example.com` and `ann@example.com` are one person to whoever searches the log, so the filter compares
lower-cased values; the stored value is unchanged (the chain hashes it as sent). Lower-casing is ASCII
only on both backends so that both answer alike: SQLite's lower() folds only ASCII, and PostgreSQL's
lower() under the "C" collation does the same (under other collations it would also fold other letters,
and by the database's locale). The index replaces 0002's exact-case one, which no query uses any more.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The filter's expression on each backend; storage/queries.py writes the same one, so the planner
# recognizes the index.
LOWER_EMAIL = {"sqlite": "lower(user_email)", "postgresql": 'lower(user_email COLLATE "C")'}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute(f'CREATE INDEX ix_events_org_user_email_ci_ts ON events (org_id, {LOWER_EMAIL[dialect]}, '
               '"timestamp", seq)')
    op.execute("DROP INDEX ix_events_org_user_email_ts")


def downgrade() -> None:
    raise NotImplementedError("auditkeep does not downgrade an audit log's schema")
