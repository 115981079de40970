"""The pinned CLI (issue #2): commands, self-audit with source "cli", one-line errors."""

from __future__ import annotations

import secrets
import socket

import pytest
from typer.testing import CliRunner

from auditkeep.cli import app
from auditkeep.storage import Storage, identity
from auditkeep.storage.events import iter_chain


def run(cli: CliRunner, *args: str, code: int = 0) -> str:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout if code == 0 else result.stderr


def test_full_setup_flow_and_key_on_stdout_only(cli: CliRunner, storage: Storage) -> None:
    org = f"acme-{secrets.token_hex(3)}"
    run(cli, "orgs", "create", org)
    run(cli, "users", "create", "--org", org, "--email", "ann@acme.test", "--role", "admin")
    run(cli, "users", "create", "--org", org, "--email", "sup@acme.test", "--role", "viewonly", "--support")
    run(cli, "service-accounts", "create", "--org", org, "--name", "siem", "--scope", "audit_logs:read",
        "--scope", "audit_logs:write")
    key = run(cli, "keys", "create", "--org", org, "--user", "ann@acme.test")
    assert key.startswith("ak_") and key.strip() == key.strip().splitlines()[0] and len(key.strip()) == 46
    sa_key = run(cli, "keys", "create", "--org", org, "--service-account", "siem").strip()
    listing = run(cli, "keys", "list", "--org", org)
    assert key.strip()[:11] in listing and sa_key[:11] in listing
    assert key.strip() not in listing and sa_key not in listing
    run(cli, "keys", "revoke", "--org", org, sa_key[:11])
    assert "revoked" in run(cli, "keys", "list", "--org", org)

    with storage.read() as conn:
        o = identity.get_org(conn, org)
        principal, _ = identity.authenticate(conn, key.strip())
    assert principal.name == "ann@acme.test" and principal.is_admin
    events = list(iter_chain(storage, o.id))
    assert [e["action"] for e in events] == [
        "organization.create", "user.create", "user.create", "service_account.create",
        "api_key.create", "api_key.create", "api_key.revoke",
    ]
    assert {e["source"] for e in events} == {"cli"}
    assert events[2]["payload"]["is_support"] is True
    assert events[6]["object_type"] == "api_key"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["users", "create", "--org", "no-such-org", "--email", "a@b.test", "--role", "admin"], "unknown organization"),
        (["keys", "create", "--org", "no-such-org", "--user", "a@b.test"], "unknown organization"),
        (["keys", "list", "--org", "no-such-org"], "unknown organization"),
    ],
)
def test_errors_are_one_line_on_stderr(cli: CliRunner, args: list[str], message: str) -> None:
    err = run(cli, *args, code=1)
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_duplicates_and_key_limit_are_clear_errors(cli: CliRunner) -> None:
    org = f"dup-{secrets.token_hex(3)}"
    run(cli, "orgs", "create", org)
    assert "already exists" in run(cli, "orgs", "create", org, code=1)
    run(cli, "users", "create", "--org", org, "--email", "a@b.test", "--role", "default")
    assert "already exists" in run(cli, "users", "create", "--org", org, "--email", "a@b.test", "--role", "admin",
                                   code=1)
    for _ in range(5):
        run(cli, "keys", "create", "--org", org, "--user", "a@b.test")
    err = run(cli, "keys", "create", "--org", org, "--user", "a@b.test", code=1)
    assert "limit is 5" in err and err.count("\n") == 1


def test_keys_create_needs_exactly_one_owner(cli: CliRunner) -> None:
    assert "exactly one" in run(cli, "keys", "create", "--org", "x", code=2)


def test_demo_is_repeatable_and_stays_under_the_key_limit(cli: CliRunner) -> None:
    for _ in range(7):
        with socket.socket() as s:  # a port nothing listens on: demo checks it first
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        out = run(cli, "demo", "--port", str(port))
        assert "API key (shown once): ak_" in out and "curl" in out


def test_migrate_reports_an_up_to_date_schema(cli: CliRunner, storage: Storage) -> None:
    assert storage.dialect in run(cli, "migrate")
