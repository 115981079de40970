"""The `auditkeep` command line (Typer). One module per command group; every command migrates first."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

# Typer (0.22+) carries its own copy of click; its exceptions are those, not the click package's.
from typer._click import exceptions as click

from auditkeep import __version__
from auditkeep.cli import (
    alerts,
    backup,
    demo,
    erasure,
    evidence,
    holds,
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
app.add_typer(alerts.app, name="alerts")
app.add_typer(holds.app, name="holds")
serve.register(app)
integrity.register(app)
evidence.register(app)
erasure.register(app)
demo.register(app)
logs.register(app)
retention.register(app)
backup.register(app)
streams.register(app)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"auditkeep {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Tamper-evident audit logs behind Datafold's audit log API."""


def _usage_line(exc: click.UsageError) -> str:
    """A usage error as one line: `error: no such option --foo (try auditkeep logs --help)`."""
    if isinstance(exc, click.NoSuchOption):
        what = f"no such option {exc.option_name}"
        if exc.possibilities:
            what += f" (did you mean {' or '.join(sorted(exc.possibilities))}?)"
    else:
        message = exc.format_message().rstrip(".")
        what = message[:1].lower() + message[1:]
    path = exc.ctx.command_path if exc.ctx is not None else "auditkeep"
    return " ".join(f"error: {what} (try {path} --help)".split())


def main() -> None:
    """Console-script entry point. Usage errors are one line on stderr (exit 2), not Typer's boxed panel.

    Example: `auditkeep logs --foo` prints `error: no such option --foo (try auditkeep logs --help)`.
    """
    command = typer.main.get_command(app)
    try:
        code = command.main(args=sys.argv[1:], prog_name="auditkeep", standalone_mode=False)
    except click.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message())
        code = 0
    except click.UsageError as exc:
        typer.echo(_usage_line(exc), err=True)
        code = exc.exit_code
    except click.ClickException as exc:
        typer.echo(" ".join(f"error: {exc.format_message()}".split()), err=True)
        code = exc.exit_code
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
