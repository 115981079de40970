"""Legal holds through the API and the CLI (issue #12): admins only, audited, per organization."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from auditkeep.auth.principals import Role, Scope
from auditkeep.cli import app
from auditkeep.storage import Storage
from auditkeep.storage.events import iter_chain
from tests.conftest import Tenant, make_tenant

pytest_plugins = ["tests.cli.conftest"]


def events(storage: Storage, tenant: Tenant, action: str) -> list[dict[str, Any]]:
    return [e for e in iter_chain(storage, tenant.org.id) if e["action"] == action]


def run(cli: CliRunner, *args: str, code: int = 0) -> str:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout + result.stderr


def test_api_create_get_list_release_each_audited(app_client: TestClient, storage: Storage, tenant: Tenant) -> None:
    r = app_client.post("/api/v1/holds", headers=tenant.headers, json={
        "reason": "Case 24-cv-1021", "user_email": "ann@example.com", "start": "2026-01-01T00:00:00Z"})
    assert r.status_code == 201, r.text
    hold = r.json()
    assert hold["active"] is True and hold["reason"] == "Case 24-cv-1021"
    assert (hold["user_email"], hold["start"], hold["end"]) == ("ann@example.com", "2026-01-01T00:00:00Z", None)
    assert hold["created_by"] == f"user {tenant.admin.name}"
    assert app_client.get(f"/api/v1/holds/{hold['id']}", headers=tenant.headers).json() == hold
    assert app_client.get("/api/v1/holds", headers=tenant.headers).json() == {"holds": [hold]}

    r = app_client.post(f"/api/v1/holds/{hold['id']}/release", headers=tenant.headers, json={"reason": "settled"})
    assert r.status_code == 200, r.text
    released = r.json()
    assert released["active"] is False and released["release_reason"] == "settled"
    assert released["released_by"] == f"user {tenant.admin.name}"
    assert app_client.get("/api/v1/holds?active=true", headers=tenant.headers).json() == {"holds": []}
    again = app_client.post(f"/api/v1/holds/{hold['id']}/release", headers=tenant.headers, json={"reason": "x"})
    assert again.status_code == 409 and "already released" in again.json()["detail"]

    (created,) = events(storage, tenant, "hold.create")
    assert created["user_email"] == tenant.admin.name and created["source"] == "api"
    assert created["payload"]["id"] == hold["id"] and created["payload"]["user_email"] == "ann@example.com"
    assert hold["id"] in created["log_entry"] and "Case 24-cv-1021" in created["log_entry"]
    (ended,) = events(storage, tenant, "hold.release")
    assert ended["payload"]["release_reason"] == "settled" and ended["payload"]["active"] is False


def test_api_refuses_bad_holds_with_fastapis_shape(app_client: TestClient, tenant: Tenant) -> None:
    for body in ({}, {"reason": ""}, {"reason": "x", "object_id": 3},
                 {"reason": "x", "start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
                 {"reason": "x", "start": "2026-02-01T00:00:00"}, {"reason": "x", "surprise": 1}):
        r = app_client.post("/api/v1/holds", headers=tenant.headers, json=body)
        assert r.status_code == 422, (body, r.text)
        assert isinstance(r.json()["detail"], list)
    r = app_client.post("/api/v1/holds/nope/release", headers=tenant.headers, json={})
    assert r.status_code == 422


@pytest.mark.parametrize("who", ["viewonly", "default", "reader"])
def test_only_admins_manage_holds(app_client: TestClient, storage: Storage, tenant: Tenant, who: str) -> None:
    if who == "reader":
        _, key = tenant.service_account(Scope.READ, Scope.WRITE)
    else:
        _, key = tenant.user(Role(who))
    hold = app_client.post("/api/v1/holds", headers=tenant.headers, json={"reason": "r"}).json()
    headers = {"Authorization": f"Key {key}"}
    for method, path, body in (("POST", "/api/v1/holds", {"reason": "r"}), ("GET", "/api/v1/holds", None),
                               ("GET", f"/api/v1/holds/{hold['id']}", None),
                               ("POST", f"/api/v1/holds/{hold['id']}/release", {"reason": "r"})):
        r = app_client.request(method, path, headers=headers, json=body)
        assert r.status_code == 403, (who, method, path, r.text)
        assert isinstance(r.json()["detail"], str)
    assert app_client.get(f"/api/v1/holds/{hold['id']}", headers=tenant.headers).json()["active"] is True


def test_another_organizations_hold_is_404(app_client: TestClient, tenant: Tenant, storage: Storage) -> None:
    other = make_tenant(storage)
    hold = app_client.post("/api/v1/holds", headers=other.headers, json={"reason": "theirs"}).json()
    assert app_client.get(f"/api/v1/holds/{hold['id']}", headers=tenant.headers).status_code == 404
    r = app_client.post(f"/api/v1/holds/{hold['id']}/release", headers=tenant.headers, json={"reason": "mine"})
    assert r.status_code == 404 and r.json() == {"detail": f"no legal hold {hold['id']!r} in this organization"}
    assert app_client.get("/api/v1/holds", headers=tenant.headers).json() == {"holds": []}
    assert app_client.get(f"/api/v1/holds/{hold['id']}", headers=other.headers).json()["active"] is True


def test_cli_create_list_release(cli: CliRunner, storage: Storage, tenant: Tenant) -> None:
    hold_id = run(cli, "holds", "create", "--org", tenant.org.name, "--reason", "Case 7", "--user-id", "42",
                  "--object-type", "report", "--object-id", "9", "--start", "2026-01-01",
                  "--end", "2026-02-01T00:00:00+01:00").strip()
    (line,) = run(cli, "holds", "list", "--org", tenant.org.name).splitlines()
    fields = line.split("\t")
    assert fields[0] == hold_id and fields[1] == "active" and fields[4] == "Case 7"
    assert fields[3] == ("user_id=42 object_type=report object_id=9 start=2026-01-01T00:00:00.000000Z "
                         "end=2026-01-31T23:00:00.000000Z")
    assert fields[2].startswith("created ") and " by cli " in fields[2]
    assert run(cli, "holds", "release", hold_id, "--reason", "Case closed") == (
        f"released legal hold {hold_id} (Case 7)\n")
    (line,) = run(cli, "holds", "list", "--org", tenant.org.name).splitlines()
    assert line.split("\t")[1].startswith("released ") and line.split("\t")[1].endswith(": Case closed")
    assert run(cli, "holds", "list", "--org", tenant.org.name, "--active") == ""
    assert "already released" in run(cli, "holds", "release", hold_id, "--reason", "again", code=1)
    (created,) = events(storage, tenant, "hold.create")
    assert created["source"] == "cli" and created["payload"]["object_id"] == 9
    (released,) = events(storage, tenant, "hold.release")
    assert released["source"] == "cli" and released["payload"]["release_reason"] == "Case closed"


def test_cli_refuses_bad_input(cli: CliRunner, tenant: Tenant) -> None:
    assert "--object-type" in run(cli, "holds", "create", "--org", tenant.org.name, "--reason", "r",
                                  "--object-id", "3", code=2)
    assert "--start" in run(cli, "holds", "create", "--org", tenant.org.name, "--reason", "r",
                            "--start", "yesterday", code=2)
    assert "no legal hold 'nope'" in run(cli, "holds", "release", "nope", "--reason", "r", code=1)


def test_a_hold_and_its_record_commit_together(
    app_client: TestClient, storage: Storage, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the hold.create / hold.release event cannot be appended, the hold is neither placed nor released."""
    from auditkeep.storage.events import EventWriter

    def fail(self: EventWriter, rows: list[Any]) -> None:
        raise RuntimeError("the log refused the append")

    placed = app_client.post("/api/v1/holds", headers=tenant.headers, json={"reason": "kept"}).json()
    with monkeypatch.context() as patch:
        patch.setattr(EventWriter, "insert", fail)
        patch.setattr(EventWriter, "insert_new", fail)
        with pytest.raises(RuntimeError):
            app_client.post("/api/v1/holds", headers=tenant.headers, json={"reason": "never placed"})
        with pytest.raises(RuntimeError):
            app_client.post(f"/api/v1/holds/{placed['id']}/release", headers=tenant.headers, json={"reason": "no"})
    assert app_client.get("/api/v1/holds", headers=tenant.headers).json() == {"holds": [placed]}
    assert [e["payload"]["reason"] for e in events(storage, tenant, "hold.create")] == ["kept"]
    assert events(storage, tenant, "hold.release") == []
