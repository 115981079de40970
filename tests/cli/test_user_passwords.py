"""`auditkeep users set-password` (issue #5): argon2 hashes, prompts, stdin, sessions ended, audited."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from auditkeep.auth.passwords import verify_password
from auditkeep.auth.principals import Role
from auditkeep.cli import app
from auditkeep.storage import Storage, identity, sessions
from auditkeep.storage.events import iter_chain
from auditkeep.storage.identity import Org


@pytest.fixture
def org(storage: Storage) -> Org:
    with storage.write() as conn:
        o = identity.create_org(conn, f"pw-{secrets.token_hex(4)}")
        identity.create_user(conn, o, "ann@pw.test", Role.ADMIN)
    return o


def _hash(storage: Storage, org: Org) -> str | None:
    with storage.read() as conn:
        return identity.get_user_password_hash(conn, org, "ann@pw.test")[1]


def test_password_from_stdin_is_stored_as_an_argon2id_hash(cli: CliRunner, storage: Storage, org: Org) -> None:
    """Only the first line counts (its newline is not part of the password); the event says source cli."""
    r = cli.invoke(app, ["users", "set-password", "--org", org.name, "--email", "ann@pw.test", "--password-stdin"],
                   input="a long enough secret\nignored second line\n")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == f"password set for ann@pw.test in organization {org.name}\n"
    stored = _hash(storage, org)
    assert stored is not None and stored.startswith("$argon2id$") and "a long enough secret" not in stored
    assert verify_password(stored, "a long enough secret")
    (event,) = [e for e in iter_chain(storage, org.id) if e["action"] == "user.password_set"]
    assert event["source"] == "cli" and event["object_type"] == "user"
    assert "a long enough secret" not in str(event)


def test_prompt_asks_twice_and_refuses_a_mismatch(cli: CliRunner, storage: Storage, org: Org) -> None:
    args = ["users", "set-password", "--org", org.name, "--email", "ann@pw.test"]
    r = cli.invoke(app, args, input="first password here\nsecond password here\n")
    assert r.exit_code != 0 and _hash(storage, org) is None
    r = cli.invoke(app, args, input="same password twice\nsame password twice\n")
    assert r.exit_code == 0, r.stderr
    assert verify_password(_hash(storage, org), "same password twice")


def test_short_password_is_refused_in_one_line(cli: CliRunner, storage: Storage, org: Org) -> None:
    r = cli.invoke(app, ["users", "set-password", "--org", org.name, "--email", "ann@pw.test", "--password-stdin"],
                   input="short\n")
    assert r.exit_code == 1 and r.stderr == "error: a password needs at least 12 characters\n"
    assert _hash(storage, org) is None


def test_unknown_user_is_one_line_on_stderr(cli: CliRunner, org: Org) -> None:
    r = cli.invoke(app, ["users", "set-password", "--org", org.name, "--email", "nobody@pw.test",
                         "--password-stdin"], input="a long enough secret\n")
    assert r.exit_code == 1 and r.stderr == f"error: unknown user 'nobody@pw.test' in organization '{org.name}'\n"


def test_setting_a_password_signs_the_user_out_everywhere(cli: CliRunner, storage: Storage, org: Org) -> None:
    now = datetime.now(UTC)
    with storage.write() as conn:
        user = identity.get_user(conn, org, "ann@pw.test")
        token = sessions.create_session(conn, user, client_ip="10.0.0.1", user_agent=None, now=now,
                                        max_age=timedelta(hours=1))
    r = cli.invoke(app, ["users", "set-password", "--org", org.name, "--email", "ann@pw.test", "--password-stdin"],
                   input="a brand new password\n")
    assert r.exit_code == 0, r.stderr
    with storage.read() as conn:
        assert sessions.get_session(conn, token, now) is None
