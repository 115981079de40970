"""Stats rollup (issue #13): a partial index of the rows that count a failure.

`top` with the filter `status=failure` (the console's "addresses with failures", an alert's group) sums the
`failure_count` of every day row of the grouped field in the range: ~130,000 `client_ip` rows for a 30-day
window of 820,000 events. Only the rows counting a failure matter (3% of events here), and this index holds
those alone, in the order a range reads them, with what the sum needs: 80 -> 20 ms a query on PostgreSQL
(docs/benchmarks.md, "Stats"). Rows stay in it while failure_count > 0, so the roller's upserts touch it
only for failures.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("CREATE INDEX ix_stats_rollup_failures ON stats_rollup "
                   "(org_id, span, field, bucket_start, value, failure_count) WHERE failure_count > 0")
    else:
        op.execute("CREATE INDEX ix_stats_rollup_failures ON stats_rollup (org_id, span, field, bucket_start) "
                   "INCLUDE (value, failure_count) WHERE failure_count > 0")


def downgrade() -> None:
    op.execute("DROP INDEX ix_stats_rollup_failures")
