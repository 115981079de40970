"""`auditkeep keys` with names and expiry (issue #9): create --name/--expires-in/--expires-at, list shows both."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from auditkeep.cli import app
from auditkeep.storage import Storage, identity
from auditkeep.storage.events import iter_chain


def run(cli: CliRunner, *args: str, code: int = 0) -> str:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout if code == 0 else result.stderr


@pytest.fixture
def org(cli: CliRunner) -> str:
    name = f"keys-{secrets.token_hex(3)}"
    run(cli, "orgs", "create", name)
    run(cli, "users", "create", "--org", name, "--email", "ann@acme.test", "--role", "admin")
    return name


def _listing(cli: CliRunner, org: str) -> dict[str, list[str]]:
    rows = [line.split("\t") for line in run(cli, "keys", "list", "--org", org).splitlines()]
    return {row[1]: row for row in rows}


def test_create_with_name_and_expiry_and_list_shows_them(cli: CliRunner, storage: Storage, org: str) -> None:
    before = datetime.now(UTC)
    named = run(cli, "keys", "create", "--org", org, "--user", "ann@acme.test", "--name", "warehouse sync",
                "--expires-in", "90").strip()
    dated = run(cli, "keys", "create", "--org", org, "--user", "ann@acme.test", "--expires-at", "2099-12-31").strip()
    rows = _listing(cli, org)
    assert rows[f"{named[:11]}…"][2] == "warehouse sync"
    with storage.read() as conn:
        o = identity.get_org(conn, org)
        infos = {k.prefix: k for k in identity.list_keys(conn, o)}
    expiry = infos[named[:11]].expires_at
    assert expiry is not None and expiry - infos[named[:11]].created_at == timedelta(days=90)
    assert infos[named[:11]].created_at >= before
    assert rows[f"{named[:11]}…"][6] == f"active until {expiry:%Y-%m-%d %H:%M}"
    assert rows[f"{dated[:11]}…"][2] == "cli"  # the default name
    assert infos[dated[:11]].expires_at == datetime(2099, 12, 31, tzinfo=UTC)
    assert rows[f"{dated[:11]}…"][6] == "active until 2099-12-31 00:00"
    created = [e for e in iter_chain(storage, o.id) if e["action"] == "api_key.create"]
    assert [(e["payload"]["name"], e["payload"]["expires_at"]) for e in created] == [  # type: ignore[index]
        ("warehouse sync", expiry.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
        ("cli", "2099-12-31T00:00:00.000000Z"),
    ]


def test_list_shows_expired_keys_as_expired(cli: CliRunner, storage: Storage, org: str) -> None:
    with storage.write() as conn:
        o = identity.get_org(conn, org)
        owner = identity.get_user(conn, o, "ann@acme.test")
        _, info = identity.create_key(conn, owner, name="old", expires_at=datetime.now(UTC) - timedelta(hours=1))
    row = _listing(cli, org)[f"{info.prefix}…"]
    assert row[2] == "old" and row[6] == f"expired {info.expires_at:%Y-%m-%d %H:%M}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "demo (make run)"], "error: the name 'demo (make run)' is kept for the keys auditkeep demo mints"),
        (["--name", " "], "error: a key name cannot be empty"),
        (["--name", "x" * 101], "error: a key name has at most 100 characters"),
        (["--expires-at", "2020-01-01"], "error: --expires-at 2020-01-01T00:00:00.000000Z is not in the future"),
        (["--expires-at", "soon"], "error: --expires-at 'soon' is not a date (2026-12-31) or date and time"),
        (["--expires-in", "3", "--expires-at", "2099-01-01"],
         "error: give at most one of --expires-in or --expires-at"),
    ],
)
def test_bad_names_and_expiries_are_one_line_errors(
    cli: CliRunner, storage: Storage, org: str, args: list[str], message: str
) -> None:
    err = run(cli, "keys", "create", "--org", org, "--user", "ann@acme.test", *args, code=2)
    assert err == message + "\n"
    assert _listing(cli, org) == {}
