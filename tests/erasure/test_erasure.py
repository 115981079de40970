"""Erasure with a provable chain (issue #12), on both backends: before/after properties, the raw bytes, holds."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from auditkeep.auth.principals import Role
from auditkeep.cli import app
from auditkeep.erasure import erase_person
from auditkeep.errors import ConflictError, NotFoundError
from auditkeep.holds import create, release
from auditkeep.ingest import service
from auditkeep.ingest.checkpointing import make_checkpoint
from auditkeep.ingest.selfaudit import Origin
from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.ingest.verification import verify_org
from auditkeep.integrity.merkle import leaf_hash, verify_consistency, verify_inclusion
from auditkeep.schemas.holds import HoldCreate
from auditkeep.settings import Settings, get_settings
from auditkeep.storage import Storage
from auditkeep.storage.events import iter_chain
from tests.conftest import Tenant, make_tenant

ORIGIN = Origin.cli(["test"])
ERASED = {"client_ip": "[erased]", "url": "[erased]", "log_entry": None, "payload": None, "referer": None,
          "user_agent": None, "user_email": None, "user_id": None}


@pytest.fixture
def cli(storage: Storage, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("AUDITKEEP_DATABASE_URL", storage.url)
    monkeypatch.setenv("AUDITKEEP_SIGNING_KEY_PATH", str(settings.signing_key_path))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def invoke(cli: CliRunner, *args: str, code: int = 0) -> str:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout + result.stderr


def person(tag: str) -> dict[str, Any]:
    """Personal values unique to this test run, so a scan for them finds only these events' copies."""
    return {"user_email": f"{tag}-{secrets.token_hex(6)}@erase.example", "user_id": secrets.randbelow(10**12) + 1,
            "client_ip": f"198.51.{secrets.randbelow(250)}.{secrets.randbelow(250)}",
            "url": f"https://app.example/{secrets.token_hex(8)}", "user_agent": f"agent-{secrets.token_hex(8)}",
            "referer": f"https://ref.example/{secrets.token_hex(8)}", "log_entry": f"entry-{secrets.token_hex(8)}",
            "payload": {"secret": f"payload-{secrets.token_hex(8)}"}}


def ingest(storage: Storage, org_id: int, people: list[dict[str, Any]]) -> None:
    events = [{**p, "action": "doc.update", "object_type": "doc", "object_id": i} for i, p in enumerate(people)]
    record_events(storage, org_id, parse_events(orjson.dumps(events), datetime.now(UTC)))


def secrets_of(p: dict[str, Any]) -> list[str]:
    return [p["user_email"], p["client_ip"], p["url"], p["user_agent"], p["referer"], p["log_entry"],
            p["payload"]["secret"]]


def database_text(storage: Storage) -> bytes:
    """SQLite: the raw bytes of the database file, its WAL, and the search index's file and its WAL (issue
    #13). PostgreSQL: every row of every table, as text."""
    if storage.dialect == "sqlite":
        # Read in another process: closing any file descriptor of the database file drops every POSIX lock
        # this process holds on it (SQLite's shared lock included), after which a verify worker closing its
        # connection takes itself for the last one and deletes the WAL under the live connections.
        path = Path(sa.make_url(storage.url).database or "")
        files = [path.with_name(path.name + suffix) for suffix in ("", "-wal", "-search", "-search-wal")]
        assert path.with_name(path.name + "-search").exists()
        read = ("import sys, os\nfor p in sys.argv[1:]:\n"
                "    os.path.exists(p) and sys.stdout.buffer.write(open(p, 'rb').read())")
        return subprocess.run([sys.executable, "-c", read, *map(str, files)], capture_output=True,
                              check=True).stdout
    with storage.read() as conn:
        tables = [r[0] for r in conn.exec_driver_sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        return b"\n".join(
            (conn.exec_driver_sql(f'SELECT coalesce(string_agg(t::text, chr(10)), \'\') FROM "{name}" t').scalar()
             or "").encode() for name in tables)


def test_erase_by_cli_keeps_verify_checkpoints_proofs_and_old_exports(
    cli: CliRunner, storage: Storage, tenant: Tenant, app_client: TestClient, tmp_path: Path
) -> None:
    """After `auditkeep erase`: reads show the erased form, verify passes, the checkpoint signed before
    verifies, an export made before verifies with verify-export, proofs verify, and the values are gone."""
    ann, bob = person("ann"), person("bob")
    ingest(storage, tenant.org.id, [ann, bob, ann, {**ann, "user_email": ann["user_email"].upper()}, bob])
    before = make_checkpoint(storage, tenant.org.id)
    (tmp_path / "cp.json").write_bytes(orjson.dumps(before.model_dump()))
    (tmp_path / "key.json").write_bytes(app_client.get("/api/v1/integrity/public_key", headers=tenant.headers).content)
    export = app_client.get("/api/v1/audit_logs", headers=tenant.headers, params={
        "include": "integrity", "format": "ndjson", "start_date": "2000-01-01T00:00:00Z"}).content
    (tmp_path / "before.ndjson").write_bytes(export)
    assert ann["user_email"].encode() in export

    out = invoke(cli, "erase", "--org", tenant.org.name, "--user-email", ann["user_email"], "--reason", "GDPR 17")
    assert "erased the personal fields of 3 events (seq 1-4)" in out

    chain = list(iter_chain(storage, tenant.org.id))
    for e in chain[:5]:
        if e["seq"] in (1, 3, 4):
            assert {k: e[k] for k in ERASED} == ERASED and e["personal_salt"] is None
            assert len(e["personal_commitment"]) == 64
        else:
            assert e["user_email"] == bob["user_email"] and e["personal_commitment"] is None
    record = [e for e in chain if e["action"] == "erasure.performed"]
    assert len(record) == 1 and record[0]["payload"]["events"] == 3
    assert record[0]["payload"]["reason"] == "GDPR 17" and sorted(record[0]["payload"]["fields"]) == sorted(ERASED)

    assert invoke(cli, "verify", "--org", tenant.org.name, "--checkpoint", str(tmp_path / "cp.json")).startswith("OK")
    assert verify_org(storage, tenant.org.id, workers=2).ok  # the parallel walk too
    out = invoke(cli, "verify-export", str(tmp_path / "before.ndjson"), "--public-key", str(tmp_path / "key.json"),
                 "--checkpoint", str(tmp_path / "cp.json"))
    assert "OK" in out
    after = app_client.get("/api/v1/audit_logs", headers=tenant.headers, params={
        "include": "integrity", "format": "ndjson", "start_date": "2000-01-01T00:00:00Z"}).content
    (tmp_path / "after.ndjson").write_bytes(after)
    invoke(cli, "verify-export", str(tmp_path / "after.ndjson"), "--public-key", str(tmp_path / "key.json"),
           "--checkpoint", str(tmp_path / "cp.json"), "--no-complete")
    csv = app_client.get("/api/v1/audit_logs", headers=tenant.headers, params={
        "include": "integrity", "format": "csv", "start_date": "2000-01-01T00:00:00Z"}).content
    (tmp_path / "after.csv").write_bytes(csv)
    invoke(cli, "verify-export", str(tmp_path / "after.csv"), "--public-key", str(tmp_path / "key.json"),
           "--checkpoint", str(tmp_path / "cp.json"), "--no-complete")

    proof = app_client.get("/api/v1/integrity/proofs/inclusion", headers=tenant.headers,
                           params={"event_uuid": chain[0]["event_uuid"], "tree_size": before.tree_size}).json()
    assert verify_inclusion(leaf_hash(bytes.fromhex(chain[0]["hash"])), 0, before.tree_size,
                            [bytes.fromhex(h) for h in proof["audit_path"]], bytes.fromhex(before.root_hash))
    later = make_checkpoint(storage, tenant.org.id)
    consistency = app_client.get("/api/v1/integrity/proofs/consistency", headers=tenant.headers,
                                 params={"first": before.tree_size, "second": later.tree_size}).json()
    assert verify_consistency(before.tree_size, later.tree_size, [bytes.fromhex(h) for h in consistency["proof"]],
                              bytes.fromhex(before.root_hash), bytes.fromhex(later.root_hash))

    stored = database_text(storage)
    for value in secrets_of(ann):
        assert value.encode() not in stored, value
    assert ann["user_email"].upper().encode() not in stored
    assert bob["user_email"].encode() in stored  # the scan does see what was not erased


def test_api_erasure_is_for_admins_and_refuses_held_events_naming_the_hold(
    storage: Storage, tenant: Tenant, app_client: TestClient
) -> None:
    """POST /api/v1/erasures: 403 for a non-admin, 409 naming the hold while one covers an event, 201 after."""
    cy = person("cy")
    ingest(storage, tenant.org.id, [cy, cy])
    _, viewer = tenant.user(Role.VIEWONLY)
    body = {"user_id": cy["user_id"], "reason": "request 7"}
    denied = app_client.post("/api/v1/erasures", json=body, headers={"Authorization": f"Key {viewer}"})
    assert denied.status_code == 403
    hold = create(storage, tenant.org.id, HoldCreate(reason="litigation", user_id=cy["user_id"]), origin=ORIGIN,
                  actor=None)
    refused = app_client.post("/api/v1/erasures", json=body, headers=tenant.headers)
    assert refused.status_code == 409 and hold.id in refused.json()["detail"]
    assert cy["user_email"] in {e["user_email"] for e in iter_chain(storage, tenant.org.id)}  # nothing erased

    release(storage, tenant.org.id, hold.id, "settled", origin=ORIGIN, actor=None)
    done = app_client.post("/api/v1/erasures", json=body, headers=tenant.headers)
    assert done.status_code == 201, done.text
    assert done.json()["events"] == 2 and done.json()["first_seq"] == 1
    both = app_client.post("/api/v1/erasures", json={**body, "user_email": "x@y"}, headers=tenant.headers)
    assert both.status_code == 422 and isinstance(both.json()["detail"], list)
    assert verify_org(storage, tenant.org.id).ok


def test_version_1_events_are_refused(storage: Storage, tenant: Tenant, cli: CliRunner,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Events written before version 2 cannot be erased without breaking their hash: refused (the CLI exits
    1 naming why), and nothing is done, not even to the person's version 2 event."""
    dee = person("dee")
    monkeypatch.setattr(service, "WRITE_VERSION", 1)
    ingest(storage, tenant.org.id, [dee])
    monkeypatch.setattr(service, "WRITE_VERSION", 2)
    ingest(storage, tenant.org.id, [dee])
    with pytest.raises(ConflictError, match=r"seq 1\).*canonical form version 1"):
        erase_person(storage, tenant.org.id, user_email=dee["user_email"], reason="r", origin=ORIGIN)
    out = invoke(cli, "erase", "--org", tenant.org.name, "--user-email", dee["user_email"], "--reason", "r", code=1)
    assert "canonical form version 1" in out and "nothing was erased" in out
    kept = [e for e in iter_chain(storage, tenant.org.id) if e["action"] == "doc.update"]
    assert [(e["seq"], e["user_email"], e["client_ip"], e["personal_commitment"]) for e in kept] == [
        (1, dee["user_email"], dee["client_ip"], None), (2, dee["user_email"], dee["client_ip"], None)]
    assert verify_org(storage, tenant.org.id).ok


def test_the_trigger_refuses_every_other_update(storage: Storage, tenant: Tenant) -> None:
    """Only the erasure's update passes: not without the guard row, and not one that changes kept columns."""
    ingest(storage, tenant.org.id, [person("eve")])
    mark = "?" if storage.dialect == "sqlite" else "%s"
    nulled = ("log_entry", "payload", "referer", "user_agent", "user_email", "user_id", "client_ip_key",
              "personal_salt")
    erase = {"client_ip": "'[erased]'", "url": "'[erased]'", **dict.fromkeys(nulled, "NULL"),
             "personal_commitment": f"'{'0' * 64}'"}
    for guard, change in ((False, {}), (True, {"action": "'forged'"}), (True, {"user_agent": "'kept'"})):
        sets = ", ".join(f"{k} = {v}" for k, v in {**erase, **change}.items())
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), storage.write() as conn:
            if guard:
                conn.exec_driver_sql(f"INSERT INTO erasure_guard (org_id) VALUES ({mark})", (tenant.org.id,))
            conn.exec_driver_sql(f"UPDATE events SET {sets} WHERE org_id = {mark}", (tenant.org.id,))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_events_and_erasures_keep_verify_and_every_checkpoint(storage: Storage, data: st.DataObject) -> None:
    """Random people's events, checkpoints between batches and random erasures: verify passes and every
    checkpoint signed before an erasure still verifies after it."""
    tenant = make_tenant(storage)
    people = [person(f"p{i}") for i in range(3)]
    checkpoints = []
    for _ in range(data.draw(st.integers(1, 3), label="batches")):
        picks = data.draw(st.lists(st.sampled_from(range(3)), min_size=1, max_size=6), label="events")
        ingest(storage, tenant.org.id, [people[i] for i in picks])
        checkpoints.append(make_checkpoint(storage, tenant.org.id))
        if data.draw(st.booleans(), label="erase now"):
            who = people[data.draw(st.sampled_from(range(3)), label="whom")]
            by_email = data.draw(st.booleans(), label="by email")
            with contextlib.suppress(NotFoundError):  # that person's events were all erased already
                erase_person(storage, tenant.org.id, reason="random", origin=ORIGIN,
                             **({"user_email": who["user_email"]} if by_email else {"user_id": who["user_id"]}))
        for checkpoint in checkpoints:
            assert verify_org(storage, tenant.org.id, checkpoint=checkpoint).ok
