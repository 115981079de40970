"""`auditkeep users`: people in an organization."""

from __future__ import annotations

from typing import Annotated

import typer

from auditkeep.auth.principals import Role
from auditkeep.cli._common import cli_origin, one_line_errors, store
from auditkeep.cli.user_passwords import set_password
from auditkeep.ingest.selfaudit import audit
from auditkeep.storage import identity

app = typer.Typer(help="Users.", no_args_is_help=True)
app.command("set-password")(set_password)


@app.command("create")
@one_line_errors
def create(
    org: Annotated[str, typer.Option("--org", help="Organization name.")],
    email: Annotated[str, typer.Option("--email", help="The user's email address.")],
    role: Annotated[Role, typer.Option("--role", help="admin, default or viewonly.")],
    support: Annotated[bool, typer.Option("--support", help="Support staff acting in the organization.")] = False,
) -> None:
    """Create a user.  Example: auditkeep users create --org acme --email ann@acme.test --role admin"""
    with store() as storage:
        with storage.write() as conn:
            o = identity.get_org(conn, org)
            user = identity.create_user(conn, o, email, role, is_support=support)
        audit(storage, o.id, "user.create", cli_origin(), object_type="user", object_id=user.id,
              log_entry=f"User {email} created with role {role.value}" + (" (support)" if support else ""),
              payload={"email": email, "role": role.value, "is_support": support})
    typer.echo(f"created user {email} (id {user.id}, role {role.value})")
