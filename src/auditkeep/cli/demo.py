"""`auditkeep demo`: make sure the demo organization and its admin exist, and hand out a fresh key."""

from __future__ import annotations

import typer

from auditkeep.auth.principals import Role
from auditkeep.cli._common import cli_origin, one_line_errors, store
from auditkeep.errors import NotFoundError
from auditkeep.ingest.selfaudit import audit
from auditkeep.storage import identity

DEMO_ORG = "demo"
DEMO_ADMIN = "admin@demo.example"


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
            audit(storage, org.id, "api_key.create", origin, object_type="api_key", object_id=info.id,
                  log_entry=f"Demo API key {info.prefix}… created for {DEMO_ADMIN}",
                  payload={"key_prefix": info.prefix, "owner": DEMO_ADMIN})
        typer.echo(f"Demo organization '{DEMO_ORG}', admin {DEMO_ADMIN}")
        typer.echo(f"API key (shown once): {key}")
        typer.echo("Try:")
        typer.echo(f"  curl -s -H 'Authorization: Key {key}' {url}/api/v1/audit_logs")
