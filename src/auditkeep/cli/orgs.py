"""`auditkeep orgs`: organizations."""

from __future__ import annotations

from typing import Annotated

import typer

from auditkeep.cli._common import cli_origin, one_line_errors, store
from auditkeep.ingest.selfaudit import audit
from auditkeep.storage import identity

app = typer.Typer(help="Organizations.", no_args_is_help=True)


@app.command("create")
@one_line_errors
def create(name: Annotated[str, typer.Argument(help="The organization's unique name.")]) -> None:
    """Create an organization.  Example: auditkeep orgs create acme"""
    with store() as storage:
        with storage.write() as conn:
            org = identity.create_org(conn, name)
        audit(storage, org.id, "organization.create", cli_origin(), object_type="organization",
              object_id=org.id, log_entry=f"Organization {name!r} created from the command line")
    typer.echo(f"created organization {name} (id {org.id})")


@app.command("list")
@one_line_errors
def list_() -> None:
    """List organizations."""
    with store() as storage, storage.read() as conn:
        for org in identity.list_orgs(conn):
            retention = f"{org.retention_days} days" if org.retention_days else "forever"
            typer.echo(f"{org.id}\t{org.name}\tretention: {retention}")
