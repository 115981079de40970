"""The `auditkeep` command line (Typer). One module per command group; every command migrates first."""

from __future__ import annotations

import typer

from auditkeep.cli import (
    backup,
    demo,
    integrity,
    keys,
    logs,
    orgs,
    retention,
    serve,
    service_accounts,
    signing_key,
    streams,
    users,
)

app = typer.Typer(
    name="auditkeep",
    help="Tamper-evident audit logs behind Datafold's audit log API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(orgs.app, name="orgs")
app.add_typer(users.app, name="users")
app.add_typer(service_accounts.app, name="service-accounts")
app.add_typer(keys.app, name="keys")
app.add_typer(signing_key.app, name="signing-key")
app.add_typer(streams.app, name="streams")
serve.register(app)
integrity.register(app)
demo.register(app)
logs.register(app)
retention.register(app)
backup.register(app)
streams.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
