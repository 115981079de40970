"""`auditkeep keys`: API keys (shown once, stored as SHA-256 digests)."""

from __future__ import annotations

from typing import Annotated

import typer

from auditkeep.cli._common import cli_origin, fail, one_line_errors, store
from auditkeep.ingest.selfaudit import audit
from auditkeep.storage import identity

app = typer.Typer(help="API keys.", no_args_is_help=True)


@app.command("create")
@one_line_errors
def create(
    org: Annotated[str, typer.Option("--org", help="Organization name.")],
    user: Annotated[str | None, typer.Option("--user", help="Owner: a user's email.")] = None,
    service_account: Annotated[
        str | None, typer.Option("--service-account", help="Owner: a service account's name.")
    ] = None,
) -> None:
    """Create a key and print only the key on stdout (it is not stored and cannot be shown again).

    Example: export AUDITKEEP_API_KEY=$(auditkeep keys create --org acme --user ann@acme.test)
    """
    if (user is None) == (service_account is None):
        raise fail("give exactly one of --user or --service-account", 2)
    with store() as storage:
        with storage.write() as conn:
            o = identity.get_org(conn, org)
            owner = (
                identity.get_user(conn, o, user)
                if user is not None
                else identity.get_service_account(conn, o, service_account or "")
            )
            key, info = identity.create_key(conn, owner)
        audit(storage, o.id, "api_key.create", cli_origin(), object_type="api_key", object_id=info.id,
              log_entry=f"API key {info.prefix}… created for {owner.describe()}",
              payload={"key_prefix": info.prefix, "owner": owner.name, "owner_kind": owner.kind})
    typer.echo(key)


@app.command("list")
@one_line_errors
def list_(org: Annotated[str, typer.Option("--org", help="Organization name.")]) -> None:
    """List keys: id, prefix, owner, created, last used, state. Never the keys themselves."""
    with store() as storage, storage.read() as conn:
        keys = identity.list_keys(conn, identity.get_org(conn, org))
    for k in keys:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        used = f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never"
        typer.echo(f"#{k.id}\t{k.prefix}…\t{k.owner_kind}:{k.owner_name}\tcreated {k.created_at:%Y-%m-%d %H:%M}"
                   f"\tlast used {used}\t{state}")


@app.command("revoke")
@one_line_errors
def revoke(
    org: Annotated[str, typer.Option("--org", help="Organization name.")],
    key_or_prefix: Annotated[str, typer.Argument(help="The key, its visible prefix (ak_XXXXXXXX) or #id.")],
) -> None:
    """Revoke a key; requests with it get 401 from then on."""
    with store() as storage:
        with storage.write() as conn:
            o = identity.get_org(conn, org)
            info = identity.revoke_key(conn, o, key_or_prefix)
        audit(storage, o.id, "api_key.revoke", cli_origin(), object_type="api_key", object_id=info.id,
              log_entry=f"API key {info.prefix}… of {info.owner_kind} {info.owner_name} revoked",
              payload={"key_prefix": info.prefix})
    typer.echo(f"revoked {info.prefix}…")
