"""Alembic migrations, run programmatically: every command that opens the database runs `upgrade` first."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

if TYPE_CHECKING:
    from auditkeep.storage.base import Storage

_HERE = Path(__file__).parent
# Serializes migrations of concurrent starters (several hosts) on PostgreSQL.
_PG_MIGRATION_LOCK = 0x61756469  # "audi"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    return cfg


def upgrade(storage: Storage) -> None:
    """Bring `storage`'s schema to the newest revision, holding a lock so concurrent starters wait."""
    cfg = _config()
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with storage.engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        conn.rollback()
    if current == head:
        return
    with storage.engine.connect() as plain:
        # BEGIN IMMEDIATE on SQLite: concurrent starters queue on the write lock instead of racing.
        conn = plain.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            if storage.dialect == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            storage.backend.after_migrate(conn)
