"""`auditkeep demo` and `make run` (issue #9): demo revokes only keys it minted, each revocation audited; it
checks the port before minting; it can fill the demo organization with sample events that verify."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from auditkeep.auth.keys import DEMO_KEY_NAME
from auditkeep.auth.principals import Role
from auditkeep.cli import app
from auditkeep.cli.demo import DEMO_ADMIN, DEMO_ORG
from auditkeep.errors import NotFoundError
from auditkeep.settings import get_settings
from auditkeep.storage import Storage, identity, open_storage
from auditkeep.storage.events import get_head, iter_chain
from auditkeep.storage.identity import ApiKeyInfo
from auditkeep.storage.tables import api_keys, chain_heads
from auditkeep.storage.types import parse_timestamp

ROOT = Path(__file__).resolve().parents[2]
DOC_NETS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]


def run(cli: CliRunner, *args: str, code: int = 0) -> str:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout if code == 0 else result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo(cli: CliRunner, *args: str, code: int = 0) -> str:
    return run(cli, "demo", "--port", str(free_port()), *args, code=code)


def admin_keys(storage: Storage) -> list[ApiKeyInfo]:
    with storage.read() as conn:
        keys = identity.list_keys(conn, identity.get_org(conn, DEMO_ORG))
    return [k for k in keys if k.owner_kind == "user" and k.owner_name == DEMO_ADMIN]


def active(keys: list[ApiKeyInfo]) -> list[ApiKeyInfo]:
    return [k for k in keys if k.state() == "active"]


def demo_events(storage: Storage, action: str) -> list[dict[str, object]]:
    with storage.read() as conn:
        org = identity.get_org(conn, DEMO_ORG)
    return [e for e in iter_chain(storage, org.id) if e["action"] == action]


@pytest.fixture
def fresh_admin(storage: Storage) -> Iterator[None]:
    """The demo admin exists with no active key (the session's database is shared by the tests here)."""
    with storage.write() as conn:
        try:
            org = identity.get_org(conn, DEMO_ORG)
        except NotFoundError:
            org = identity.create_org(conn, DEMO_ORG)
        try:
            identity.get_user(conn, org, DEMO_ADMIN)
        except NotFoundError:
            identity.create_user(conn, org, DEMO_ADMIN, Role.ADMIN)
    with storage.write() as conn:
        for k in active(admin_keys(storage)):
            identity.revoke_key(conn, org, f"#{k.id}")
    yield


def test_demo_never_revokes_a_key_the_user_made(cli: CliRunner, storage: Storage, fresh_admin: None) -> None:
    """Four keys of the user's own, then demo twice: the second run retires demo's first key, not theirs."""
    own = [run(cli, "keys", "create", "--org", DEMO_ORG, "--user", DEMO_ADMIN, "--name", f"mine {i}").strip()
           for i in range(4)]
    first = demo(cli)
    assert "revoked" not in first
    first_key = re.search(r"API key \(shown once\): (ak_\S+)", first)
    assert first_key is not None
    second = demo(cli)
    assert f"revoked 1 older demo key {first_key.group(1)[:11]}…" in second
    keys = {k.prefix: k for k in admin_keys(storage)}
    assert [keys[k[:11]].state() for k in own] == ["active"] * 4
    assert keys[first_key.group(1)[:11]].state() == "revoked"
    assert len(active(list(keys.values()))) == 5
    (revoked,) = [e for e in demo_events(storage, "api_key.revoke")
                  if e["object_id"] == keys[first_key.group(1)[:11]].id]
    assert revoked["source"] == "cli" and revoked["status"] == "success"
    assert revoked["payload"]["key_prefix"] == first_key.group(1)[:11]  # type: ignore[index]
    assert revoked["payload"]["name"] == DEMO_KEY_NAME  # type: ignore[index]


def test_every_demo_revocation_is_audited(cli: CliRunner, storage: Storage, fresh_admin: None) -> None:
    """Seven runs keep 2 demo keys active (the newest and the one before); each of the 5 keys retired has
    exactly one api_key.revoke event, and the admin keeps free slots for keys of their own."""
    before = {k.id for k in admin_keys(storage) if k.state() == "revoked"}
    outputs = [demo(cli) for _ in range(7)]
    assert sum("revoked 1 older demo key" in out for out in outputs) == 5
    keys = admin_keys(storage)
    retired = {k.id for k in keys if k.state() == "revoked"} - before
    assert len(retired) == 5 and len(active(keys)) == 2
    assert all(k.name == DEMO_KEY_NAME for k in keys if k.id in retired)
    audited = [e["object_id"] for e in demo_events(storage, "api_key.revoke") if e["object_id"] in retired]
    assert sorted(audited) == sorted(retired)  # type: ignore[type-var]


def test_demo_refuses_when_the_limit_is_full_of_the_users_keys(
    cli: CliRunner, storage: Storage, fresh_admin: None
) -> None:
    """No silent revocation: one line with a hint, exit 1, no key minted, nothing recorded."""
    for i in range(5):
        run(cli, "keys", "create", "--org", DEMO_ORG, "--user", DEMO_ADMIN, "--name", f"mine {i}")
    keys_before = admin_keys(storage)
    with storage.read() as conn:
        head_before = get_head(storage, identity.get_org(conn, DEMO_ORG).id).seq
    err = demo(cli, code=1)
    assert err.count("\n") == 1
    assert err.startswith(f"error: {DEMO_ADMIN} already has 5 active API keys of their own (the limit is 5) and "
                          "demo revokes only keys it minted; revoke one with `auditkeep keys revoke --org demo")
    assert admin_keys(storage) == keys_before
    with storage.read() as conn:
        assert get_head(storage, identity.get_org(conn, DEMO_ORG).id).seq == head_before


def test_demo_keys_are_named_and_expire_in_30_days(cli: CliRunner, storage: Storage, fresh_admin: None) -> None:
    out = demo(cli)
    key = re.search(r"API key \(shown once\): (ak_\S+)", out)
    assert key is not None
    (info,) = active(admin_keys(storage))
    assert info.prefix == key.group(1)[:11] and info.name == DEMO_KEY_NAME
    assert info.expires_at is not None and info.expires_at - info.created_at == timedelta(days=30)
    assert f"named 'demo (make run)'; it expires in 30 days ({info.expires_at:%Y-%m-%d %H:%M} UTC)" in out
    created = [e for e in demo_events(storage, "api_key.create") if e["object_id"] == info.id]
    assert [e["payload"]["name"] for e in created] == [DEMO_KEY_NAME]  # type: ignore[index]


def _totals(storage: Storage) -> tuple[int, int]:
    with storage.read() as conn:
        keys = conn.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar_one()
        events = conn.execute(sa.select(sa.func.sum(chain_heads.c.seq))).scalar_one()
    return keys, int(events or 0)


def test_demo_fails_before_minting_when_the_port_is_taken(cli: CliRunner, storage: Storage) -> None:
    demo(cli)  # the org exists: nothing but a key and its event could be added
    before = _totals(storage)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = run(cli, "demo", "--port", str(port), code=1)
    assert err == f"error: port {port} is in use; try make run PORT={port + 1}\n"
    assert _totals(storage) == before


def test_demo_prints_urls_for_its_host_and_port(cli: CliRunner) -> None:
    port = free_port()
    out = run(cli, "demo", "--host", "0.0.0.0", "--port", str(port))  # what make run HOST=0.0.0.0 passes
    key = re.search(r"API key \(shown once\): (ak_\S+)", out)
    assert key is not None
    assert f"  curl -s -H 'Authorization: Key {key.group(1)}' http://127.0.0.1:{port}/api/v1/audit_logs\n" in out
    assert f"Web console: http://127.0.0.1:{port}/  (listening on 0.0.0.0:{port})\n" in out


def _sample_uuids(storage: Storage) -> list[dict[str, object]]:
    with storage.read() as conn:
        org = identity.get_org(conn, DEMO_ORG)
    return [e for e in iter_chain(storage, org.id) if str(e["url"]).startswith("https://app.demo.example/")]


def test_sample_events_are_realistic_and_the_chain_verifies(cli: CliRunner, storage: Storage) -> None:
    demo(cli)
    already = len(_sample_uuids(storage))
    out = demo(cli, "--sample-events", "120")
    assert "added 120 sample events from the last 7 days" in out
    samples = _sample_uuids(storage)[already:]
    assert len(samples) == 120
    now = datetime.now(UTC)
    times = [parse_timestamp(str(e["timestamp"])) for e in samples]
    assert times == sorted(times) and all(now - timedelta(days=7) <= t < now for t in times)
    assert all(any(ipaddress.ip_address(str(e["client_ip"])) in net for net in DOC_NETS) for e in samples)
    assert len({e["user_email"] for e in samples}) >= 4
    assert any(e["action"] == "user.login" and e["status"] == "success" for e in samples)
    assert any(e["action"] == "user.login" and e["status"] == "failure" for e in samples)
    assert any(e["is_support_user"] is True for e in samples)
    assert {str(e["action"]).split(".")[0] for e in samples} >= {"user", "report", "datasource", "api_key"}
    assert "OK: the log verifies" in run(cli, "verify", "--org", DEMO_ORG)
    # --if-empty (what make run passes) adds none to an organization that has events.
    assert "sample events" not in demo(cli, "--sample-events", "120", "--if-empty")
    assert len(_sample_uuids(storage)) == already + 120


def test_first_demo_with_if_empty_fills_a_new_demo_org(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make run`'s first time: a new database's demo org gets the sample events, the second run adds none."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("AUDITKEEP_DATABASE_URL", url)
    get_settings.cache_clear()
    cli = CliRunner()
    assert "added 30 sample events" in demo(cli, "--sample-events", "30", "--if-empty")
    assert "sample events" not in demo(cli, "--sample-events", "30", "--if-empty")
    storage = open_storage(url)
    try:
        assert len(_sample_uuids(storage)) == 30
    finally:
        storage.dispose()
        get_settings.cache_clear()


def test_make_run_passes_port_and_host_to_demo_and_serve() -> None:
    # Without the make that may be running this suite (make test): its MAKELEVEL adds "make[1]:" lines.
    env = {k: v for k, v in os.environ.items() if k not in {"MAKELEVEL", "MAKEFLAGS", "MFLAGS"}}
    out = subprocess.run(["make", "-n", "run", "PORT=8001", "HOST=0.0.0.0"], cwd=ROOT, capture_output=True,
                         text=True, check=True, env=env).stdout.splitlines()
    assert [line for line in out if line.startswith(".venv/bin/auditkeep ")] == [
        ".venv/bin/auditkeep demo --host '0.0.0.0' --port '8001' --sample-events '200' --if-empty",
        ".venv/bin/auditkeep serve --host '0.0.0.0' --port '8001'",
    ]
