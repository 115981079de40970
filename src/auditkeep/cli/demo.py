"""`auditkeep demo`: make sure the demo organization and its admin exist, and hand out a fresh key.

The demo admin signs in to the console with the documented password DEMO_PASSWORD, set only while the
admin has no password: once changed (`auditkeep users set-password`), `make run` leaves it alone.

Keys: demo mints keys named DEMO_KEY_NAME that expire after DEMO_KEY_LIFETIME, and to stay under the
limit of active keys it revokes only keys it minted itself, oldest first, each one self-audited. Keys the
admin made in the console or with `auditkeep keys create` are never touched (issue #9).
"""

from __future__ import annotations

import errno
import socket
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from auditkeep.auth.keys import DEMO_KEY_NAME
from auditkeep.auth.passwords import hash_password, verify_password
from auditkeep.auth.principals import Role
from auditkeep.cli import _sample_events
from auditkeep.cli._common import cli_origin, fail, one_line_errors, store
from auditkeep.errors import NotFoundError
from auditkeep.ingest.selfaudit import audit
from auditkeep.storage import identity
from auditkeep.storage.events import get_head
from auditkeep.storage.identity import ApiKeyInfo
from auditkeep.storage.types import format_timestamp

DEMO_ORG = "demo"
DEMO_ADMIN = "admin@demo.example"
DEMO_PASSWORD = "demo-password-change-me"  # noqa: S105 - documented in the README, for the local demo only
DEMO_KEY_LIFETIME = timedelta(days=30)  # so the keys of many `make run`s do not pile up
DEMO_KEYS_KEPT = 1  # earlier demo keys left active beside the new one
_WILDCARDS = {"0.0.0.0", "::", ""}  # noqa: S104 - recognised, not bound: they are printed as 127.0.0.1


def check_port(host: str, port: int) -> None:
    """Fail with one line unless `auditkeep serve --host host --port port` could listen there now."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn's listener does: a port left in TIME_WAIT by a stopped server is free, a live one is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise fail(f"port {port} is in use; try make run PORT={port + 1}") from None
            raise fail(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def base_url(host: str, port: int) -> str:
    """The URL people type to reach `serve --host host --port port` from this machine."""
    shown = "127.0.0.1" if host in _WILDCARDS else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def _keys_to_retire(keys: list[ApiKeyInfo], now: datetime) -> tuple[list[ApiKeyInfo], list[ApiKeyInfo]]:
    """The admin's own active keys, and the oldest of demo's active keys that must go.

    Demo keeps one earlier key of its own beside the new one (a script started with the last `make run`'s
    key survives one restart), and only while that leaves the admin a free slot for a key of their own.
    """
    active = [k for k in keys if k.owner_kind == "user" and k.owner_name == DEMO_ADMIN and k.state(now) == "active"]
    minted = [k for k in active if k.name == DEMO_KEY_NAME]
    own = [k for k in active if k.name != DEMO_KEY_NAME]
    room = min(DEMO_KEYS_KEPT, identity.MAX_KEYS_PER_USER - 2 - len(own))  # earlier demo keys that may stay
    return own, minted[: max(0, len(minted) - max(0, room))]


def register(app: typer.Typer) -> None:
    """Add the command to the root app."""

    @app.command("demo")
    @one_line_errors
    def demo(
        host: Annotated[str, typer.Option(help="Address `auditkeep serve` will bind (checked first).")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port `auditkeep serve` will listen on (checked first).")] = 8000,
        sample_events: Annotated[
            int, typer.Option("--sample-events", min=0, metavar="N", help="Fill the demo org with N sample events.")
        ] = 0,
        if_empty: Annotated[
            bool, typer.Option("--if-empty", help="Add the sample events only while the demo org has no events.")
        ] = False,
    ) -> None:
        """Ensure org 'demo' with admin admin@demo.example exists; print a fresh admin key and a curl command.

        Example: auditkeep demo --port 8001 --sample-events 200 && auditkeep serve --port 8001
        """
        check_port(host, port)  # before anything is minted: a server that cannot start makes the key useless
        origin = cli_origin()
        now = datetime.now(UTC)
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
                own, retire = _keys_to_retire(identity.list_keys(conn, org), now)
                if len(own) >= identity.MAX_KEYS_PER_USER:
                    raise fail(
                        f"{DEMO_ADMIN} already has {len(own)} active API keys of their own (the limit is "
                        f"{identity.MAX_KEYS_PER_USER}) and demo revokes only keys it minted; revoke one with "
                        f"`auditkeep keys revoke --org {DEMO_ORG} PREFIX` (see `auditkeep keys list --org {DEMO_ORG}`)"
                    )
                for old in retire:
                    identity.revoke_key(conn, org, f"#{old.id}")
                key, info = identity.create_key(conn, admin, name=DEMO_KEY_NAME, lifetime=DEMO_KEY_LIFETIME)
                assert info.expires_at is not None
                expires_at = info.expires_at
                _, password_hash = identity.get_user_password_hash(conn, org, DEMO_ADMIN)
                if password_hash is None:
                    identity.set_password_hash(conn, admin.id, hash_password(DEMO_PASSWORD))
            filled = 0
            if sample_events and not (if_empty and get_head(storage, org.id).seq > 0):
                filled = _sample_events.fill(storage, org.id, sample_events)
            for old in retire:
                audit(storage, org.id, "api_key.revoke", origin, object_type="api_key", object_id=old.id,
                      log_entry=f"Older demo API key {old.prefix}… of {DEMO_ADMIN} revoked by auditkeep demo "
                      f"(demo keeps its newest two keys active and leaves room for the admin's own)",
                      payload={"key_prefix": old.prefix, "owner": DEMO_ADMIN, "owner_kind": "user",
                               "name": old.name, "reason": "superseded demo key"})
            if password_hash is None:
                audit(storage, org.id, "user.password_set", origin, object_type="user", object_id=admin.id,
                      log_entry=f"Demo console password set for {DEMO_ADMIN}", payload={"email": DEMO_ADMIN})
            audit(storage, org.id, "api_key.create", origin, object_type="api_key", object_id=info.id,
                  log_entry=f"Demo API key {info.prefix}… created for {DEMO_ADMIN}",
                  payload={"key_prefix": info.prefix, "owner": DEMO_ADMIN, "owner_kind": "user",
                           "name": DEMO_KEY_NAME, "expires_at": format_timestamp(expires_at)})
        url = base_url(host, port)
        typer.echo(f"Demo organization '{DEMO_ORG}', admin {DEMO_ADMIN}")
        if filled:
            typer.echo(f"added {filled} sample events from the last 7 days")
        if retire:
            plural = "s" if len(retire) > 1 else ""
            typer.echo(f"revoked {len(retire)} older demo key{plural} "
                       + ", ".join(f"{k.prefix}…" for k in retire)
                       + f" (at most {identity.MAX_KEYS_PER_USER} active keys; your own keys are never revoked)")
        typer.echo(f"API key (shown once): {key}")
        typer.echo(f"  named {DEMO_KEY_NAME!r}; it expires in {DEMO_KEY_LIFETIME.days} days "
                   f"({expires_at:%Y-%m-%d %H:%M} UTC)")
        typer.echo("Try:")
        typer.echo(f"  curl -s -H 'Authorization: Key {key}' {url}/api/v1/audit_logs")
        typer.echo(f"Web console: {url}/" + (f"  (listening on {host}:{port})" if host in _WILDCARDS else ""))
        if password_hash is None or verify_password(password_hash, DEMO_PASSWORD):
            typer.echo(f"  sign in as {DEMO_ADMIN} with password {DEMO_PASSWORD}")
        else:
            typer.echo(f"  sign in as {DEMO_ADMIN} with the password you set "
                       f"(reset: auditkeep users set-password --org {DEMO_ORG} --email {DEMO_ADMIN})")
