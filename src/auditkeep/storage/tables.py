"""SQLAlchemy Core metadata: the one schema both backends share, and Alembic's target.

Every index and unique key on `events` leads with `org_id`, so the table can be distributed by
organization (Citus) and, on PostgreSQL, it is range-partitioned by `timestamp` (see
migrations/versions/0001_initial.py and docs/architecture.md).
"""

from __future__ import annotations

import sqlalchemy as sa

from auditkeep.storage.types import JsonText, Timestamp

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

organizations = sa.Table(
    "organizations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("retention_days", sa.Integer, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("is_support", sa.Boolean, nullable=False, default=False),
    sa.Column("password_hash", sa.String(200), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.UniqueConstraint("org_id", "email"),
)

service_accounts = sa.Table(
    "service_accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    # Space-separated scopes, e.g. "audit_logs:read audit_logs:write".
    sa.Column("scopes", sa.String(200), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.UniqueConstraint("org_id", "name"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=True),
    sa.Column("service_account_id", sa.Integer, sa.ForeignKey("service_accounts.id"), nullable=True),
    # The visible start of the key ("ak_" + 8 characters): names it in listings and events.
    sa.Column("prefix", sa.String(16), nullable=False),
    # SHA-256 of the whole key, hex. Keys carry 256 random bits, so a fast digest is safe (no
    # password-style stretching is needed) and lookups stay one index probe.
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("last_used_at", Timestamp, nullable=True),
    sa.Column("revoked_at", Timestamp, nullable=True),
    # What the key is for, as its owner named it ("" for keys made before migration 0006), and when it
    # stops working on its own (issue #9): an expired key is refused like a revoked one.
    sa.Column("name", sa.String(100), nullable=False, server_default=""),
    sa.Column("expires_at", Timestamp, nullable=True),
    sa.CheckConstraint(
        "(user_id IS NULL) <> (service_account_id IS NULL)", name="one_owner"
    ),
    sa.Index(None, "org_id", "prefix"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("org_id", sa.Integer, nullable=False),
    # Per-organization, strictly increasing from 1, no gaps: assigned at ingest under the org's head lock.
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("event_uuid", sa.String(36), nullable=False),
    sa.Column("timestamp", Timestamp, nullable=False),
    sa.Column("received_at", Timestamp, nullable=False),
    sa.Column("action", sa.Text, nullable=True),
    sa.Column("client_ip", sa.String(45), nullable=False),
    sa.Column("is_support_user", sa.Boolean, nullable=True),
    sa.Column("log_entry", sa.Text, nullable=True),
    sa.Column("object_id", sa.BigInteger, nullable=True),
    sa.Column("object_type", sa.Text, nullable=True),
    sa.Column("payload", JsonText, nullable=True),
    sa.Column("referer", sa.Text, nullable=True),
    sa.Column("request_type", sa.Text, nullable=True),
    sa.Column("source", sa.Text, nullable=True),
    sa.Column("status", sa.Text, nullable=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("user_agent", sa.Text, nullable=True),
    sa.Column("user_email", sa.Text, nullable=True),
    sa.Column("user_id", sa.BigInteger, nullable=True),
    # Hash chain (issue #3): lowercase hex SHA-256 values.
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    # client_ip as a sortable key (version byte + packed address) for address/CIDR filters; derived at
    # insert (storage/addresses.py), not part of the hashed content (migration 0002).
    sa.Column("client_ip_key", sa.LargeBinary, nullable=True),
    # Canonical form version 2 (issue #12, migration 0011): the salt of the event's personal commitment
    # (32 hex digits; NULL for version 1 events and once erased), and the commitment itself, kept only
    # once an erasure has removed the values and the salt (docs/integrity.md §1.2).
    sa.Column("personal_salt", sa.String(32), nullable=True),
    sa.Column("personal_commitment", sa.String(64), nullable=True),
    sa.PrimaryKeyConstraint("org_id", "seq"),
    sa.Index("ix_events_org_uuid", "org_id", "event_uuid", unique=True),
    sa.Index("ix_events_org_ts_seq", "org_id", "timestamp", "seq"),
    # Query filters (issue #4). Migration 0002 is the reference: it also gives `action` the "C" collation on
    # PostgreSQL and adds two partial indexes (support staff's events, failures).
    *(
        sa.Index(f"ix_events_org_{c}_ts", "org_id", c, "timestamp", "seq")
        for c in ("action", "object_type", "user_id", "object_id", "client_ip_key")
    ),
)
# user_email is matched case-insensitively, so its index is on the ASCII-lower-cased address (migration
# 0007, the reference: on PostgreSQL the expression is `lower(user_email COLLATE "C")`).
sa.Index("ix_events_org_user_email_ci_ts", events.c.org_id, sa.func.lower(events.c.user_email), events.c.timestamp,
         events.c.seq)

# One row per organization: the chain's head, locked by every writer of that organization. It is what
# serializes ingest per organization (no forks, no gaps) while organizations write in parallel.
chain_heads = sa.Table(
    "chain_heads",
    metadata,
    sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    # RFC 9162 compact range of the Merkle tree over hashes 1..seq (hex, comma-separated, largest
    # subtree first), so a root at the head costs O(log n) instead of a full rebuild.
    sa.Column("merkle_frontier", sa.Text, nullable=False, default=""),
    # seq of the first event still stored (after retention purges; 1 before any).
    sa.Column("first_seq", sa.BigInteger, nullable=False, default=1),
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("tree_size", sa.BigInteger, nullable=False),
    sa.Column("root_hash", sa.String(64), nullable=False),
    sa.Column("chain_head", sa.String(64), nullable=False),
    sa.Column("issued_at", sa.String(27), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("signature", sa.String(200), nullable=False),
    sa.Index(None, "org_id", "tree_size"),
)

# The compact range and signed checkpoint at a retention purge boundary (issue #3, migration 0004): lets
# verification resume at seq tree_size + 1 with the Merkle root still computable.
integrity_anchors = sa.Table(
    "integrity_anchors",
    metadata,
    sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("tree_size", sa.BigInteger, nullable=False),
    sa.Column("merkle_frontier", sa.Text, nullable=False),
    sa.Column("root_hash", sa.String(64), nullable=False),
    sa.Column("chain_head", sa.String(64), nullable=False),
    sa.Column("issued_at", sa.String(27), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("signature", sa.String(200), nullable=False),
    sa.PrimaryKeyConstraint("org_id", "tree_size"),
)

# Roots of perfect Merkle subtrees (2^height leaves from leaf node_index * 2^height), height >= 10, filled
# by proofs as they compute them (migration 0005, ingest/proofs.py). Append-only history makes them
# immutable; they are a cache a client checks like any proof, not a source of truth.
merkle_nodes = sa.Table(
    "merkle_nodes",
    metadata,
    sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("height", sa.SmallInteger, nullable=False),
    sa.Column("node_index", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.PrimaryKeyConstraint("org_id", "height", "node_index"),
)

# A row here, inserted and deleted inside the purge transaction, is the only thing the append-only
# trigger lets a DELETE on events through with (issue #4 retention).
retention_guard = sa.Table(
    "retention_guard",
    metadata,
    sa.Column("org_id", sa.Integer, primary_key=True),
)

# The erasure's counterpart of retention_guard (migration 0011): an erasure transaction inserts its
# organization's row, updates the events, and removes the row before committing, so the append-only
# trigger lets that one sanctioned update through and no other (ingest/erasure.py).
erasure_guard = sa.Table(
    "erasure_guard",
    metadata,
    sa.Column("org_id", sa.Integer, primary_key=True),
)

# --- the web console (issue #5) ------------------------------------------------------------------------

# Signed-in console sessions. The cookie holds a random token; only its SHA-256 is stored, so someone
# who reads the database cannot sign in with what they read.
console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("token_digest", sa.String(64), nullable=False, unique=True),
    # Synchronizer token: every POST of this session must carry it (CSRF).
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
    sa.Column("client_ip", sa.String(45), nullable=False),
    sa.Column("user_agent", sa.String(512), nullable=True),
    sa.Index(None, "org_id", "user_id"),
)

# Failed sign-in counters (auth/throttle.py): one row per account ("account:" + SHA-256 of the
# lower-cased email) and per client address ("ip:" + address).
signin_throttle = sa.Table(
    "signin_throttle",
    metadata,
    sa.Column("key", sa.String(80), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("last_failure_at", Timestamp, nullable=False),
    sa.Column("locked_until", Timestamp, nullable=True),
)

# --- recording reads (issue #9) -----------------------------------------------------------------------

# A key's polling session with one filter set, covered by one audit_logs.read record (migration 0008,
# ingest/read_rules.py): polls within AUDITKEEP_READ_SESSION_SECONDS of started_at write none.
read_sessions = sa.Table(
    "read_sessions",
    metadata,
    sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("reader", sa.String(80), nullable=False),
    sa.Column("query_digest", sa.String(64), nullable=False),
    sa.Column("record_uuid", sa.String(36), nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.PrimaryKeyConstraint("org_id", "reader", "query_digest"),
)

# --- streams (issue #10) ------------------------------------------------------------------------------

# A stream is a durable cursor over one organization's seq order, delivered to a destination
# (streams/). `delivered_seq` moves only when the destination acknowledged everything up to it, and only
# by the forwarder that holds the lease; `generation` changes when an operator replays or reconfigures,
# so a batch read before that change can never move the cursor after it (migration 0009).
streams = sa.Table(
    "streams",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    # The destination's settings without its secrets, as JSON text; the secrets are sealed apart
    # (streams/secrets.py) so the API and the logs can show `config` whole.
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("sealed_secrets", sa.Text, nullable=False),
    sa.Column("filter", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # active | paused (failing is derived)
    sa.Column("delivered_seq", sa.BigInteger, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_delivery_at", Timestamp, nullable=True),
    sa.Column("next_attempt_at", Timestamp, nullable=True),
    sa.Column("lease_owner", sa.String(120), nullable=True),
    sa.Column("lease_until", Timestamp, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint("org_id", "name"),
)

# --- alert rules (issue #13) --------------------------------------------------------------------------

# A rule watches one organization's events in seq order (alerts/evaluator.py): `evaluated_seq` is its
# durable cursor and `window_state` (JSON) the matching events still inside its window per group, with
# each group's cooldown, both moved in one transaction by the node holding the rule's lease, so a restart
# neither misses an event nor counts one twice. `generation` changes when an admin changes what the rule
# counts, so an evaluation read before that change never lands after it (migration 0012).
alert_rules = sa.Table(
    "alert_rules",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("template", sa.String(64), nullable=True),
    sa.Column("filter", sa.Text, nullable=False),
    sa.Column("threshold_count", sa.Integer, nullable=False),
    sa.Column("window_seconds", sa.Integer, nullable=False),
    sa.Column("group_by", sa.Text, nullable=False),
    # Notification channels without their secrets (JSON); the secrets (a webhook's HMAC secret, a Slack
    # webhook URL) are sealed apart, as a stream's are (streams/secrets.py).
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
    sa.UniqueConstraint("org_id", "name"),
)

# Each time a rule fired: an outbox written in the same transaction as the cursor that found it, then
# worked off (alerts/notify.py): its `alert.fired` event recorded once under `event_uuid`, and each
# channel still in `pending` (JSON list of indexes into the rule's notify) retried with backoff until it
# takes the notification or MAX_ATTEMPTS pass (`done_at` set either way).
alert_firings = sa.Table(
    "alert_firings",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
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
    sa.Index(None, "rule_id", "done_at"),
)

# --- legal holds and per-action retention (issue #12, migration 0010) -----------------------------------

# A legal hold keeps the events it covers from retention and erasure until it is released. An event is
# covered when it matches every criterion given (NULL = any): user_email (ASCII-case-insensitive, as the
# API's filter), user_id, object_type, object_id, and `timestamp` in [start_ts, end_ts). A released hold
# stays here, with who released it and why, so holds are on the record as well as in the log.
legal_holds = sa.Table(
    "legal_holds",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("user_email", sa.Text, nullable=True),
    sa.Column("user_id", sa.BigInteger, nullable=True),
    sa.Column("object_type", sa.Text, nullable=True),
    sa.Column("object_id", sa.BigInteger, nullable=True),
    sa.Column("start_ts", Timestamp, nullable=True),
    sa.Column("end_ts", Timestamp, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("released_at", Timestamp, nullable=True),
    sa.Column("released_by", sa.Text, nullable=True),
    sa.Column("release_reason", sa.Text, nullable=True),
    sa.Index(None, "org_id", "released_at"),
)

# Per-action retention rules. `action` is an exact action or a prefix ending in `*`; `*` alone is the
# organization's default rule, whose maximum stays in organizations.retention_days (kept there for
# compatibility) and whose row holds only its minimum. NULL max_days = forever; min_days = no deletion
# before that many days, whatever a more specific rule says (storage/retention_rules.py).
retention_rules = sa.Table(
    "retention_rules",
    metadata,
    sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("action", sa.String(200), nullable=False),
    sa.Column("max_days", sa.Integer, nullable=True),
    sa.Column("min_days", sa.Integer, nullable=True),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.PrimaryKeyConstraint("org_id", "action"),
)


# --- search (issue #13) -------------------------------------------------------------------------------

# Per organization, the seq up to which the search index behind `q` is complete; moved by the indexer in
# the transaction that adds the entries (storage/search.py, migration 0013). The entries themselves are
# dialect-specific and so not in this metadata: SQLite's FTS5 table `search_fts` (trigram tokenizer) and
# PostgreSQL's `search_docs` (org_id, seq, timestamp, doc) with a pg_trgm GIN index on doc.
search_positions = sa.Table(
    "search_positions",
    metadata,
    sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), primary_key=True),
    sa.Column("indexed_seq", sa.BigInteger, nullable=False),
)



# --- stats rollup (issue #13, migration 0017) -------------------------------------------------------------

# Per organization, the seq up to which every event is counted in stats_rollup; moved by the roller in the
# transaction that adds the counts (storage/rollup.py).
stats_positions = sa.Table(
    "stats_positions",
    metadata,
    sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), primary_key=True),
    sa.Column("rolled_seq", sa.BigInteger, nullable=False),
)

# Events and failures per (organization, span `hour`|`day`, field, bucket start, value): field '' (value
# '') counts every event; `action`, `status`, `source`, `user_email`, `client_ip` count by that field's
# value (events without one are not counted there); `read_*` fields the same for audit_logs.read events.
# Keyed by org_id first; not partitioned: a purge subtracts the events it deletes (storage/rollup.py).
stats_rollup = sa.Table(
    "stats_rollup",
    metadata,
    sa.Column("org_id", sa.Integer, nullable=False),
    sa.Column("span", sa.String(4), nullable=False),
    sa.Column("field", sa.String(16), nullable=False),
    sa.Column("bucket_start", Timestamp, nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("event_count", sa.BigInteger, nullable=False),
    sa.Column("failure_count", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("org_id", "span", "field", "bucket_start", "value",
                            postgresql_include=["event_count", "failure_count"]),  # index-only reads (0017)
    sqlite_with_rowid=False,
)
# Migration 0018 adds ix_stats_rollup_failures, a partial index of the rows with failure_count > 0 (what
# `status=failure` reads, storage/stats.py): on PostgreSQL its counts are INCLUDEd, which an sa.Index shared
# by both backends cannot say, so it lives in the migration alone.

# --- self-watch (issue #13, migration 0014) -------------------------------------------------------------

# One row per organization for the server's own continuous verifier (selfwatch/watcher.py). `id` is the
# organization's id (storage/leases.py takes leases by `id`). The watcher has verified seq 1..verified_seq
# from the events' stored fields: `verified_hash` is the hash it recomputed for verified_seq and
# `merkle_frontier` the compact range of the tree of that size (NULL after a purge without an anchor: no
# roots). `checkpoint_size` is the tree size of the last signed checkpoint compared; `full_verified_at`
# when the last scheduled full verify ran. `failures` (JSON list of {seq, kind, reason, check, at}) holds
# every distinct failure found and recorded as an `integrity.verify_failed` event since the log last
# verified in full; empty means intact (`auditkeep_integrity_ok 1`, no console banner).
integrity_watch = sa.Table(
    "integrity_watch",
    metadata,
    sa.Column("id", sa.Integer, sa.ForeignKey("organizations.id"), primary_key=True),
    sa.Column("verified_seq", sa.BigInteger, nullable=False),
    sa.Column("verified_hash", sa.String(64), nullable=True),
    sa.Column("merkle_frontier", sa.Text, nullable=True),
    sa.Column("checkpoint_size", sa.BigInteger, nullable=False),
    sa.Column("full_verified_at", Timestamp, nullable=False),
    sa.Column("failures", sa.Text, nullable=False),
    sa.Column("lease_owner", sa.String(120), nullable=True),
    sa.Column("lease_until", Timestamp, nullable=True),
    sa.Column("updated_at", Timestamp, nullable=False),
)


# --- saved searches (issue #13, migration 0015) ---------------------------------------------------------

# A named filter set of one organization (the console's or the API's query string, without paging), so
# anyone of the organization can return to it or share it by link (storage/saved_searches.py).
saved_searches = sa.Table(
    "saved_searches",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("org_id", sa.Integer, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("query", sa.Text, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.UniqueConstraint("org_id", "name"),
)


# --- job leases (issue #14, migration 0016) ---------------------------------------------------------------

# One row per background job that one node at a time runs for the whole deployment (`partitions`: the
# events table's partition upkeep, storage/partitions.py): the lease (storage/leases.py) and when the job
# last ran, so whichever node holds the lease runs it once per interval.
job_leases = sa.Table(
    "job_leases",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("lease_owner", sa.String(120), nullable=True),
    sa.Column("lease_until", Timestamp, nullable=True),
    sa.Column("last_run_at", Timestamp, nullable=True),
)
