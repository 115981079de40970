"""`auditkeep users set-password`: a user's console password (argon2id hash; registered in users.py)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from auditkeep.auth.passwords import WeakPasswordError, check_strength, hash_password
from auditkeep.cli._common import cli_origin, fail, one_line_errors, store
from auditkeep.ingest.selfaudit import audit
from auditkeep.storage import identity, sessions


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        # One line: the trailing newline that `echo` or a heredoc adds is not part of the password.
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    try:
        check_strength(password)
    except WeakPasswordError as exc:
        raise fail(str(exc)) from None
    return password


@one_line_errors
def set_password(
    org: Annotated[str, typer.Option("--org", help="Organization name.")],
    email: Annotated[str, typer.Option("--email", help="The user's email address.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
    ] = False,
) -> None:
    """Set a user's console password (prompts twice unless --password-stdin); signs them out everywhere.

    Example: auditkeep users set-password --org acme --email ann@acme.test --password-stdin < pw.txt
    """
    with store() as storage:
        with storage.read() as conn:
            o = identity.get_org(conn, org)
            user = identity.get_user(conn, o, email)
        password_hash = hash_password(_read_password(password_stdin))
        with storage.write() as conn:
            identity.set_password_hash(conn, user.id, password_hash)
            ended = sessions.end_user_sessions(conn, user.id)
        audit(storage, o.id, "user.password_set", cli_origin(), object_type="user", object_id=user.id,
              log_entry=f"Console password set for user {email}",
              payload={"email": email, "sessions_ended": ended})
    typer.echo(f"password set for {email} in organization {org}")
