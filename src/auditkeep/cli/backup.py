"""`auditkeep backup OUTPUT`: a consistent copy of a SQLite database taken while the server keeps running.

SQLite's online backup API copies every page in one step inside a single read transaction: in WAL mode
that transaction sees one committed state and does not block writers, so ingest goes on while the copy
is made and the copy is exactly the database at the moment the step began. PostgreSQL is refused:
pg_dump does the same job there (docs/production.md, "Backups").

The backup is self-audited (`audit_logs.backup`) in every organization's log, after the copy is made
and naming the seq it reaches: a copy of an organization's log is a read of all of it, and reads are
audited. The record lands in the source, not in the copy, whose state is the moment it was taken.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer

from auditkeep.cli._common import cli_origin, fail, one_line_errors, store
from auditkeep.ingest.selfaudit import audit
from auditkeep.settings import get_settings
from auditkeep.storage import integrity as records

POSTGRES_REFUSAL = ("auditkeep backup copies SQLite databases only; back up PostgreSQL with pg_dump "
                    '(docs/production.md, "Backups")')
_HEADS = ("SELECT o.id, o.name, h.seq, h.hash FROM organizations o JOIN chain_heads h ON h.org_id = o.id "
          "ORDER BY o.name")


def copy_database(source: Path, output: Path, *, busy_timeout_ms: int) -> list[tuple[int, str, int, str]]:
    """Copy the SQLite database at `source` to the new file `output`; each organization's (id, name, seq, hash).

    The copy is written to a temporary file beside `output`, made a single self-contained file (rollback
    journal, no -wal beside it), fsync'd and only then given its name, which it never takes over an
    existing file: a crash leaves no half-written backup under the real name.
    """
    temporary = output.with_name(f".{output.name}.{secrets.token_hex(8)}.tmp")
    try:
        with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(temporary)) as dst:
            src.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            src.backup(dst)  # pages=-1: every page in one step, so one read transaction, one state
            dst.execute("PRAGMA journal_mode = DELETE")
            heads = [(int(i), str(n), int(s), str(h)) for i, n, s, h in dst.execute(_HEADS)]
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(temporary, output)  # fails if `output` exists: never overwrite a backup
    finally:
        temporary.unlink(missing_ok=True)
    return heads


def register(app: typer.Typer) -> None:
    """Add the command to the root app."""

    @app.command("backup")
    @one_line_errors
    def backup(
        output: Annotated[Path, typer.Argument(help="The new SQLite file to write (must not exist).", dir_okay=False)],
    ) -> None:
        """Copy the SQLite database to OUTPUT while the server keeps ingesting; `auditkeep verify` accepts the copy.

        Prints each organization's seq and chain head in the copy. PostgreSQL: use pg_dump instead.

        Example: auditkeep backup /var/backups/auditkeep/$(date +%F).db
        """
        url = sa.make_url(get_settings().database_url)
        if url.get_backend_name() != "sqlite":
            raise fail(POSTGRES_REFUSAL)
        if output.exists():
            raise fail(f"{output} already exists: a backup never overwrites a file")
        with store() as storage:
            database = records.dbapi_target(storage)
            if database is None:
                raise fail("the database is in memory: there is no file to back up")
            heads = copy_database(Path(database), output, busy_timeout_ms=storage.settings.sqlite_busy_timeout_ms)
            for org_id, _name, seq, chain_head in heads:
                audit(storage, org_id, "audit_logs.backup", cli_origin(), object_type="audit_log",
                      log_entry=f"Database backed up through seq {seq}",
                      payload={"output": str(output.resolve()), "seq": seq, "chain_head": chain_head})
        for _, name, seq, chain_head in heads:
            typer.echo(f"{name}\tseq {seq}\tchain head {chain_head}")
        typer.echo(f"wrote {output} ({output.stat().st_size} bytes)")
