"""`auditkeep erase` (issue #12): erase one person's personal fields, keeping the chain provable."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from auditkeep.cli._common import fail, one_line_errors, store
from auditkeep.ingest.selfaudit import Origin
from auditkeep.storage import identity

_PERSON_OPTIONS = ("--user-email", "--user-id")


def redacted_argv(argv: list[str]) -> list[str]:
    """The command line with the person's email or id replaced, so the erasure's own record (its url)
    does not keep what it erased."""
    out: list[str] = []
    hide = False
    for arg in argv:
        if hide:
            out.append("[erased]")
            hide = False
        elif arg in _PERSON_OPTIONS:
            out.append(arg)
            hide = True
        elif arg.startswith(tuple(f"{o}=" for o in _PERSON_OPTIONS)):
            out.append(arg.split("=", 1)[0] + "=[erased]")
        else:
            out.append(arg)
    return out


def register(app: typer.Typer) -> None:
    """Add the command to the root app."""

    @app.command("erase")
    @one_line_errors
    def erase(
        *,
        org: Annotated[str, typer.Option("--org", help="Organization name.")],
        reason: Annotated[str, typer.Option("--reason", help="Why (recorded in erasure.performed).")],
        user_email: Annotated[str | None, typer.Option("--user-email", help="The person's email (any case).")]
        = None,
        user_id: Annotated[int | None, typer.Option("--user-id", help="The person's user_id.")] = None,
    ) -> None:
        """Erase the personal fields of every event of one person; hashes, proofs and checkpoints still verify.

        client_ip and url become "[erased]"; log_entry, payload, referer, user_agent, user_email and user_id
        become null. Other events whose personal fields mention the person's email or user_id (an
        audit_logs.read of a query filtered by them, a url carrying their address) are erased too. Refused
        (exit 1, nothing erased) when a legal hold covers one of the events.

        Example: auditkeep erase --org acme --user-email ann@example.com --reason "GDPR request 42"
        """
        from auditkeep.erasure import erase_person

        if (user_email is None) == (user_id is None):
            raise fail("give exactly one of --user-email and --user-id", 2)
        if not reason.strip():
            raise fail("--reason must not be empty", 2)
        with store() as storage:
            with storage.read() as conn:
                o = identity.get_org(conn, org)
            done = erase_person(storage, o.id, user_email=user_email, user_id=user_id, reason=reason,
                                origin=Origin.cli(redacted_argv(sys.argv[1:])))
        typer.echo(f"{org}: erased the personal fields of {done.events:,} events (seq {done.first_seq}-"
                   f"{done.last_seq}) and of {done.mentions:,} other events mentioning the person; recorded as "
                   f"erasure.performed {done.event_uuid}")
        if not done.scrubbed:
            typer.echo("note: readers kept the WAL from being truncated; the old pages leave it at the next "
                       "checkpoint", err=True)
