"""Every knob auditkeep has: its environment variable and its default, in one place."""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration read from `AUDITKEEP_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="AUDITKEEP_", extra="ignore")

    database_url: str = "sqlite:///./var/auditkeep.db"
    # PostgreSQL hot standbys of database_url, comma-separated. Log reads, exports and stats run on one that
    # has replayed everything the reader is owed (storage/replicas.py), else on the primary; writes never.
    read_database_url: str = ""
    # A replica short of what a read is owed whose last replayed commit is older than this many seconds is
    # skipped (and asked again a second later).
    replica_max_lag: float = Field(default=5.0, gt=0)
    # X-Forwarded-For is believed only when the direct peer is one of these networks, so a client
    # cannot forge the client_ip recorded in its own audit events.
    # Comma-separated networks, e.g. AUDITKEEP_TRUSTED_PROXIES="10.0.0.0/8, ::1".
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(default_factory=list)
    # Ed25519 key that signs checkpoints; kept outside the repository and the database so that
    # someone with only database access cannot re-sign a rewritten history.
    signing_key_path: Path = Path("./var/signing-key.pem")
    checkpoint_every_events: int = Field(default=10_000, ge=1)
    checkpoint_every_seconds: float = Field(default=300.0, gt=0)
    # Writers wait this long for SQLite's write lock before giving up (and then retry).
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0)
    # What sits between auditkeep and PostgreSQL. "pgbouncer" (transaction pooling): psycopg prepares no
    # statement on the server (PgBouncer before 1.21 cannot follow them from one server connection to the
    # next), and the one session setting auditkeep wants is set per transaction unless the role already
    # has it (docs/production.md, "Pooling").
    database_pooler: Literal["none", "pgbouncer"] = "none"
    # Connections each worker process keeps open to the database (or the pooler), and how many more it
    # opens under a burst; a worker never holds more than the two added up.
    database_pool_size: int = Field(default=10, ge=1)
    database_max_overflow: int = Field(default=10, ge=0)
    log_level: str = "INFO"
    # On SIGTERM `auditkeep serve` stops accepting, lets requests in flight finish for up to this many
    # seconds, then ends what is left (a cut-off export ends without its last chunk, which clients see as
    # an incomplete body) and flushes read records before it exits (docs/architecture.md, "Failure
    # behaviour"). Whole seconds: uvicorn's timeout_graceful_shutdown is an int.
    shutdown_grace: int = Field(default=10, ge=0)
    # Console sessions (issue #5).
    session_max_age_seconds: int = Field(default=8 * 3600, ge=60)
    # One audit_logs.read record covers a cursor walk, or a key's polling session with one filter set, for
    # this long after it is written (issue #9, ingest/read_rules.py).
    read_session_seconds: float = Field(default=3600.0, gt=0)

    # Streams (issue #10). Destination secrets (HMAC secrets, tokens, passwords) are sealed with this key
    # before they reach the database, so a copy of the database alone does not hand them out; every node
    # that forwards needs the same file, like the signing key.
    secrets_key_path: Path = Path("./var/secrets-key")
    # `auditkeep serve` runs the forwarder in each worker unless this is off (`auditkeep forward` then
    # runs it apart); a stream is delivered by one forwarder at a time, holding a lease this long.
    forwarder: bool = True
    stream_lease_seconds: float = Field(default=30.0, ge=1)
    stream_poll_seconds: float = Field(default=0.25, gt=0)
    # Partition upkeep on PostgreSQL (issue #14, storage/partitions.py): monthly partitions of `events` kept
    # ready this many months ahead, and emptied months before last month dropped; one node at a time runs
    # it, every `partition_upkeep_seconds`, holding a lease this long.
    partition_months_ahead: int = Field(default=3, ge=1, le=120)
    partition_upkeep_seconds: float = Field(default=3600.0, gt=0)
    partition_lease_seconds: float = Field(default=60.0, ge=1)

    # Search (issue #13): `auditkeep serve` runs the search indexer in each worker unless this is off (then
    # `q` scans what is not indexed, with short pages once that passes storage.search.TAIL_LIMIT events).
    # An indexer that has caught up looks for new events this often (background.py: also after a pass that
    # found some, issue #11): the unindexed tail `q` scans is about this long.
    search_indexer: bool = True
    search_poll_seconds: float = Field(default=0.5, gt=0)
    # The share of time a busy indexer works (1: flat out). Below 1 it takes less CPU (and on PostgreSQL
    # database work) from ingest and lets the unindexed tail grow during a burst (docs/benchmarks.md,
    # "Search"); on SQLite it no longer shares a lock with ingest (its own file).
    search_indexer_duty: float = Field(default=1.0, gt=0, le=1)

    # Stats (issue #13): `auditkeep serve` runs the stats roller in each worker unless this is off (then stats
    # count events from `events` once more than storage.rollup.TAIL_LIMIT are not rolled up). A roller that
    # has caught up looks for new events this often: the tail stats count directly is about this long.
    stats_roller: bool = True
    stats_roll_seconds: float = Field(default=1.0, gt=0)

    # Alert rules (issue #13, docs/alerts.md). `auditkeep serve` evaluates them in each worker unless this is
    # off (`auditkeep alerts watch` then runs apart); a rule is evaluated by one node at a time, holding a
    # lease this long. Email notifications go through smtp://[user:password@]host:port (STARTTLS when the
    # server offers it) or smtps://host:port, from smtp_from.
    alert_evaluator: bool = True
    alert_lease_seconds: float = Field(default=30.0, ge=1)
    alert_poll_seconds: float = Field(default=1.0, gt=0)
    smtp_url: str | None = None
    smtp_from: str = "auditkeep@localhost"

    # Self-watch (issue #13, docs/integrity.md §14). `auditkeep serve` verifies each organization's new
    # events as they arrive (polling this often), compares each new signed checkpoint, and runs a full
    # verify every `verify_interval` seconds (AUDITKEEP_VERIFY_INTERVAL; 1,000,000 events cost ~7 CPU s, so
    # hourly is ~0.2% of a core per million events). One node at a time watches an organization, holding a
    # lease this long.
    self_watch: bool = True
    verify_interval: float = Field(default=3600.0, gt=0)
    self_watch_poll_seconds: float = Field(default=1.0, gt=0)
    self_watch_lease_seconds: float = Field(default=30.0, ge=1)

    # Limits (issue #11; README "Limits"). Rate limits are `limits` strings ("50/second;3000/minute"): every
    # part must hold. Per API key (by the key's id): generous enough for the SDK's paging and batched ingest.
    rate_limit: str = "100/second;6000/minute"
    # Failed authentications per client address (deps.client_ip); over it, every API request from that
    # address is answered 429 until the window passes, the right key or not.
    auth_failure_limit: str = "20/minute"
    # Where the counts live: memory:// (each process its own) or redis://host:port (shared by every worker
    # and node); the key prefix keeps deployments that share one Redis apart.
    rate_limit_storage: str = "memory://"
    rate_limit_key_prefix: str = "auditkeep"
    # Request sizes, bounded before anything else reads the request (api/request_limits.py). A GET body
    # only ever holds a date range; ingest (POST /api/v1/audit_logs) keeps its own 16 MB; `auditkeep
    # serve` answers 431 to a request whose line and headers exceed max_header_bytes (h11's default).
    max_get_body_bytes: int = Field(default=8 * 1024, ge=0)
    max_body_bytes: int = Field(default=1024 * 1024, ge=0)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)

    @field_validator("rate_limit", "auth_failure_limit")
    @classmethod
    def _parse_limit(cls, value: str) -> str:
        from limits import parse_many

        parse_many(value)  # ValueError names what it could not read
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return [ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip()]
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
