"""`auditkeep demo`: make sure the demo organization and its admin exist, and hand out a fresh key.

The demo admin signs in to the console with the documented password DEMO_PASSWORD, set only while the
admin has no password: once changed (`auditkeep users set-password`), `make run` leaves it alone.
"""

from __future__ import annotations

import typer

from auditkeep.auth.passwords import hash_password, verify_password
from auditkeep.auth.principals import Role
from auditkeep.cli._common import cli_origin, one_line_errors, store
from auditkeep.errors import NotFoundError
from auditkeep.ingest.selfaudit import audit
from auditkeep.storage import identity

DEMO_ORG = "demo"
DEMO_ADMIN = "admin@demo.example"
DEMO_PASSWORD = "demo-password-change-me"  # noqa: S105 - documented in the README, for the local demo only


def register(app: typer.Typer) -> None:
    """Add the command to the root app."""

    @app.command("demo")
    @one_line_errors
    def demo(
        url: str = typer.Option("http://127.0.0.1:8000", help="Where the server will listen (for the hint)."),
    ) -> None:
        """Ensure org 'demo' with admin admin@demo.example exists; print a fresh admin key and a curl command."""
        origin = cli_origin()
        with store() as storage:
            with storage.write() as conn:
                try:
                    org = identity.get_org(conn, DEMO_ORG)
                except NotFoundError:
                    org = identity.create_org(conn, DEMO_ORG)
                try:
                    admin = identity.get_user(conn, org, DEMO_ADMIN)
                except NotFoundError:
                    admin = identity.create_user(conn, org, DEMO_ADMIN, Role.ADMIN)
                # Keep under the 5-key limit across many `make run`s: retire the oldest demo keys.
                active = [k for k in identity.list_keys(conn, org)
                          if k.owner_name == DEMO_ADMIN and k.revoked_at is None]
                for old in active[: max(0, len(active) - 4)]:
                    identity.revoke_key(conn, org, f"#{old.id}")
                key, info = identity.create_key(conn, admin)
                _, password_hash = identity.get_user_password_hash(conn, org, DEMO_ADMIN)
                if password_hash is None:
                    identity.set_password_hash(conn, admin.id, hash_password(DEMO_PASSWORD))
            if password_hash is None:
                audit(storage, org.id, "user.password_set", origin, object_type="user", object_id=admin.id,
                      log_entry=f"Demo console password set for {DEMO_ADMIN}", payload={"email": DEMO_ADMIN})
            audit(storage, org.id, "api_key.create", origin, object_type="api_key", object_id=info.id,
                  log_entry=f"Demo API key {info.prefix}… created for {DEMO_ADMIN}",
                  payload={"key_prefix": info.prefix, "owner": DEMO_ADMIN})
        typer.echo(f"Demo organization '{DEMO_ORG}', admin {DEMO_ADMIN}")
        typer.echo(f"API key (shown once): {key}")
        typer.echo("Try:")
        typer.echo(f"  curl -s -H 'Authorization: Key {key}' {url}/api/v1/audit_logs")
        typer.echo(f"Web console: {url}/")
        if password_hash is None or verify_password(password_hash, DEMO_PASSWORD):
            typer.echo(f"  sign in as {DEMO_ADMIN} with password {DEMO_PASSWORD}")
        else:
            typer.echo(f"  sign in as {DEMO_ADMIN} with the password you set "
                       f"(reset: auditkeep users set-password --org {DEMO_ORG} --email {DEMO_ADMIN})")
