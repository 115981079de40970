"""`auditkeep keys`: API keys (shown once, stored as SHA-256 digests), with names and optional expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from auditkeep.auth.keys import key_name_problem
from auditkeep.cli._common import cli_origin, fail, one_line_errors, store
from auditkeep.ingest.selfaudit import audit
from auditkeep.storage import identity
from auditkeep.storage.identity import ApiKeyInfo
from auditkeep.storage.types import format_timestamp

app = typer.Typer(help="API keys.", no_args_is_help=True)


def _expiry(expires_at: str | None, now: datetime) -> datetime | None:
    """When the key stops working: DATE (a bare date is 00:00 UTC that day; naive = UTC), or never."""
    if expires_at is None:
        return None
    try:
        when = datetime.fromisoformat(expires_at.strip())  # a bare date reads as 00:00 that day
    except ValueError:
        raise fail(f"--expires-at {expires_at!r} is not a date (2026-12-31) or date and time", 2) from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if when <= now:
        raise fail(f"--expires-at {format_timestamp(when)} is not in the future", 2)
    return when


def describe_state(key: ApiKeyInfo, now: datetime) -> str:
    """A key's state as `keys list` and `auditkeep demo` print it."""
    state = key.state(now)
    if state == "revoked":
        return f"revoked {key.revoked_at:%Y-%m-%d %H:%M}"
    if state == "expired":
        return f"expired {key.expires_at:%Y-%m-%d %H:%M}"
    return f"active until {key.expires_at:%Y-%m-%d %H:%M}" if key.expires_at else "active"


@app.command("create")
@one_line_errors
def create(
    *,
    org: Annotated[str, typer.Option("--org", help="Organization name.")],
    user: Annotated[str | None, typer.Option("--user", help="Owner: a user's email.")] = None,
    service_account: Annotated[
        str | None, typer.Option("--service-account", help="Owner: a service account's name.")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="What the key is for (1-100 characters).")] = "cli",
    expires_in: Annotated[
        int | None, typer.Option("--expires-in", min=1, metavar="DAYS", help="Expire DAYS days from now.")
    ] = None,
    expires_at: Annotated[
        str | None,
        typer.Option("--expires-at", metavar="DATE", help="Expire at DATE (2026-12-31 = 00:00 UTC that day)."),
    ] = None,
) -> None:
    """Create a key and print only the key on stdout (it is not stored and cannot be shown again).

    Example: export AUDITKEEP_API_KEY=$(auditkeep keys create --org acme --user ann@acme.test
    --name warehouse-sync --expires-in 90)
    """
    if (user is None) == (service_account is None):
        raise fail("give exactly one of --user or --service-account", 2)
    name = name.strip()
    if problem := key_name_problem(name):
        raise fail(problem, 2)
    if expires_in is not None and expires_at is not None:
        raise fail("give at most one of --expires-in or --expires-at", 2)
    lifetime = timedelta(days=expires_in) if expires_in is not None else None
    expiry = _expiry(expires_at, datetime.now(UTC))
    with store() as storage:
        with storage.write() as conn:
            o = identity.get_org(conn, org)
            owner = (
                identity.get_user(conn, o, user)
                if user is not None
                else identity.get_service_account(conn, o, service_account or "")
            )
            key, info = identity.create_key(conn, owner, name=name, expires_at=expiry, lifetime=lifetime)
        audit(storage, o.id, "api_key.create", cli_origin(), object_type="api_key", object_id=info.id,
              log_entry=f"API key {info.prefix}… ({name}) created for {owner.describe()}",
              payload={"key_prefix": info.prefix, "owner": owner.name, "owner_kind": owner.kind, "name": name,
                       "expires_at": format_timestamp(info.expires_at) if info.expires_at else None})
    typer.echo(key)


@app.command("list")
@one_line_errors
def list_(org: Annotated[str, typer.Option("--org", help="Organization name.")]) -> None:
    """List keys: id, prefix, name, owner, created, last used, state. Never the keys themselves.

    Example: auditkeep keys list --org acme
    """
    with store() as storage, storage.read() as conn:
        keys = identity.list_keys(conn, identity.get_org(conn, org))
    now = datetime.now(UTC)
    for k in keys:
        used = f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never"
        typer.echo(f"#{k.id}\t{k.prefix}…\t{k.name or '(unnamed)'}\t{k.owner_kind}:{k.owner_name}"
                   f"\tcreated {k.created_at:%Y-%m-%d %H:%M}\tlast used {used}\t{describe_state(k, now)}")


@app.command("revoke")
@one_line_errors
def revoke(
    org: Annotated[str, typer.Option("--org", help="Organization name.")],
    key_or_prefix: Annotated[str, typer.Argument(help="The key, its visible prefix (ak_XXXXXXXX) or #id.")],
) -> None:
    """Revoke a key; requests with it get 401 from then on.

    Example: auditkeep keys revoke --org acme ak_3kX9f0Qa
    """
    with store() as storage:
        with storage.write() as conn:
            o = identity.get_org(conn, org)
            info = identity.revoke_key(conn, o, key_or_prefix)
        audit(storage, o.id, "api_key.revoke", cli_origin(), object_type="api_key", object_id=info.id,
              log_entry=f"API key {info.prefix}… of {info.owner_kind} {info.owner_name} revoked",
              payload={"key_prefix": info.prefix})
    typer.echo(f"revoked {info.prefix}…")
