"""Stats rollup (issue #13): per-hour and per-day counts that serve /api/v1/audit_logs/stats and the
console chart (storage/rollup.py), kept behind ingest by the roller (rollup/roller.py).

- `stats_rollup`: per organization, span (`hour` or `day`), field (`''` for every event, else `action`,
  `status`, `source`, `user_email` or `client_ip`, and `read_*` the same for `audit_logs.read` events),
  bucket start and the field's value (`''` for the total): how many events, and how many of them failures
  (status exactly `failure`). `user_email` and `client_ip` (and their `read_*`) have day rows alone.
  The primary key leads with org_id, then what every stats query fixes (span, field) and the bucket
  range it scans; SQLite keeps it WITHOUT ROWID, so the key is the table and a stats
  query reads it alone. Not partitioned: a retention purge subtracts what it deletes (storage/rollup.py).
  Its size is one row per (hour or day, field, value) seen: docs/benchmarks.md, "Stats", has it measured.
- `stats_positions`: per organization, the seq up to which every event is counted (`rolled_seq`); it moves
  in the transaction that adds the counts, so a crash loses nothing and counts nothing twice.

Existing events are not rolled up here: the roller catches up in the background after the upgrade, and
until it has, stats count the events directly (storage/rollup.py).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from auditkeep.storage.types import Timestamp

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stats_positions",
        sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("rolled_seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("org_id", name="pk_stats_positions"),
    )
    op.create_table(
        "stats_rollup",
        sa.Column("org_id", sa.Integer, nullable=False),
        sa.Column("span", sa.String(4), nullable=False),
        sa.Column("field", sa.String(16), nullable=False),
        sa.Column("bucket_start", Timestamp, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("event_count", sa.BigInteger, nullable=False),
        sa.Column("failure_count", sa.BigInteger, nullable=False),
        # PostgreSQL: the counts in the key's index too, so a stats query is an index-only scan. A month's
        # user_email rows (~57,000 at 820,000 events a month) scattered over the heap cost ~260 ms to fetch,
        # ~110 ms read from the index alone (bench/stats_bench.py, load 14).
        sa.PrimaryKeyConstraint("org_id", "span", "field", "bucket_start", "value", name="pk_stats_rollup",
                                postgresql_include=["event_count", "failure_count"]),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("stats_rollup")
    op.drop_table("stats_positions")
