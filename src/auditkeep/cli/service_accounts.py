"""`auditkeep service-accounts`: non-human callers with scopes."""

from __future__ import annotations

from typing import Annotated

import typer

from auditkeep.auth.principals import Scope
from auditkeep.cli._common import cli_origin, one_line_errors, store
from auditkeep.ingest.selfaudit import audit
from auditkeep.storage import identity

app = typer.Typer(help="Service accounts.", no_args_is_help=True)


@app.command("create")
@one_line_errors
def create(
    org: Annotated[str, typer.Option("--org", help="Organization name.")],
    name: Annotated[str, typer.Option("--name", help="The service account's name.")],
    scope: Annotated[list[Scope] | None, typer.Option("--scope", help="audit_logs:read or audit_logs:write.")] = None,
) -> None:
    """Create a service account.

    Example: auditkeep service-accounts create --org acme --name siem --scope audit_logs:read
    """
    scopes = frozenset(scope or [])
    with store() as storage:
        with storage.write() as conn:
            o = identity.get_org(conn, org)
            account = identity.create_service_account(conn, o, name, scopes)
        audit(storage, o.id, "service_account.create", cli_origin(), object_type="service_account",
              object_id=account.id, log_entry=f"Service account {name!r} created with scopes "
              f"{' '.join(sorted(scopes)) or '(none)'}", payload={"name": name, "scopes": sorted(scopes)})
    typer.echo(f"created service account {name} (id {account.id})")
