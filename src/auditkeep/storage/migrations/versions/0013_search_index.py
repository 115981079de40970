"""The search index behind `q` (issue #13): a trigram index of each event's `log_entry` and `url`,
filled behind ingest by the indexer (search/indexer.py), and each organization's position in it.

- `search_positions`: per organization, the highest seq whose index entry is committed (`indexed_seq`);
  it moves in the same transaction as the entries, so a crash loses nothing.
- SQLite: `search_fts`, an FTS5 table with the `trigram` tokenizer (case-folded substrings of three or
  more characters), rowid = org_id * 2^40 + seq (storage/search.py), holding the text it indexes so an
  entry can be deleted by rowid alone.
- PostgreSQL: `search_docs` (org_id, seq, timestamp, doc) with a `pg_trgm` GIN index on doc. pg_trgm is
  a trusted extension (PostgreSQL 13+), so a database owner may create it.

Existing events are not indexed here: the indexer catches up in the background after the upgrade, and
until it has, `q` scans what it has not indexed (storage/search.py).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "search_positions",
        sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("indexed_seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("org_id", name="pk_search_positions"),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute("CREATE VIRTUAL TABLE search_fts USING fts5(doc, tokenize = 'trigram', detail = 'full')")
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute('CREATE TABLE search_docs (org_id integer NOT NULL, seq bigint NOT NULL, '
               '"timestamp" timestamptz NOT NULL, doc text NOT NULL, '
               "CONSTRAINT pk_search_docs PRIMARY KEY (org_id, seq))")
    op.execute("CREATE INDEX ix_search_docs_doc_trgm ON search_docs USING gin (doc gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE search_fts")
    else:
        op.execute("DROP TABLE search_docs")
    op.drop_table("search_positions")
