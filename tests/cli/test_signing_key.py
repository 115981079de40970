"""`auditkeep signing-key rotate`: checkpoints signed before and after a rotation all still verify."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from auditkeep.api.app import create_app
from auditkeep.cli import app
from auditkeep.integrity.checkpoints import load_checkpoint
from auditkeep.settings import Settings, get_settings
from auditkeep.storage import Storage, open_storage, tables
from auditkeep.storage.events import iter_chain
from tests.conftest import Tenant, make_tenant
from tests.integrity_db._tamper import seed


@pytest.fixture
def storage(own_storage: Storage) -> Storage:
    """A database of this test's own, on the session's backend, in place of the session's shared one.

    `signing-key rotate` records the rotation in every organization of the database. In the shared one
    that meant every other test's organization: among them those tests/integrity_db tampered with on
    purpose (an event's seq rewritten past the chain head), where the rotation's append met a stored seq
    (`UNIQUE constraint failed: events.org_id, events.seq`) and the command failed; and every later test
    counting its organization's events would have counted a rotation it never made."""
    return own_storage


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    """A signing key of this test's own: rotating it leaves the session's key alone."""
    return tmp_path / "keys" / "signing-key.pem"


@pytest.fixture
def cli(storage: Storage, key_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("AUDITKEEP_DATABASE_URL", storage.url)
    monkeypatch.setenv("AUDITKEEP_SIGNING_KEY_PATH", str(key_path))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


@pytest.fixture
def server(storage: Storage, settings: Settings, key_path: Path) -> Iterator[TestClient]:
    """The real app over the test database, signing with this test's key."""
    mine = settings.model_copy(update={"database_url": storage.url, "signing_key_path": key_path})
    own = open_storage(storage.url, settings=mine, migrate=False)
    with TestClient(create_app(mine, storage=own)) as client:
        yield client
    own.dispose()


def invoke(cli: CliRunner, *args: str, code: int = 0) -> tuple[str, str]:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout, result.stderr


def test_old_and_new_checkpoints_verify_after_rotations(cli: CliRunner, server: TestClient, storage: Storage,
                                                        tenant: Tenant, tmp_path: Path) -> None:
    """Checkpoints from three keys verify with `verify --checkpoint` and with verify-export given the published
    key document; the single-key document saved before the rotation still verifies the old checkpoint."""
    org = tenant.org.name
    seed(storage, tenant.org.id, 5)
    (tmp_path / "cp1.json").write_text(invoke(cli, "checkpoint", "--org", org)[0])
    single, _ = invoke(cli, "signing-key", "show")
    (tmp_path / "single.json").write_text(single)
    assert "retired" not in orjson.loads(single)

    rotated, err = invoke(cli, "signing-key", "rotate")
    seed(storage, tenant.org.id, 3, start=5)
    (tmp_path / "cp2.json").write_text(invoke(cli, "checkpoint", "--org", org)[0])
    invoke(cli, "signing-key", "rotate")
    seed(storage, tenant.org.id, 2, start=8)
    (tmp_path / "cp3.json").write_text(invoke(cli, "checkpoint", "--org", org)[0])

    cps = [load_checkpoint((tmp_path / f"cp{n}.json").read_bytes()) for n in (1, 2, 3)]
    first = orjson.loads(single)
    assert cps[0].key_id == first["key_id"]
    assert orjson.loads(rotated)["key_id"] == cps[1].key_id
    assert orjson.loads(rotated)["retired"][0]["key_id"] == first["key_id"]
    assert err == f"retired key {first['key_id']} (kept in {tmp_path / 'keys' / 'signing-key.retired.json'}); " \
                  f"now signing with {cps[1].key_id}\n"
    assert len({c.key_id for c in cps}) == 3

    published = server.get("/api/v1/integrity/public_key", headers=tenant.headers)
    assert published.status_code == 200
    document = orjson.loads(published.content)
    assert document["key_id"] == cps[2].key_id
    assert [r["key_id"] for r in document["retired"]] == [cps[0].key_id, cps[1].key_id]
    assert published.content.decode() == invoke(cli, "signing-key", "show")[0]
    (tmp_path / "keys.json").write_bytes(published.content)

    for n in (1, 2, 3):
        out, _ = invoke(cli, "verify", "--org", org, "--checkpoint", str(tmp_path / f"cp{n}.json"))
        assert out.startswith("OK: the log verifies")
    out, _ = invoke(cli, "verify", "--org", org)
    assert "checkpoints compared: 3\n" in out  # the stored three, none ignored as another key's

    export = server.get("/api/v1/audit_logs", headers=tenant.headers,
                        params={"include": "integrity", "format": "ndjson", "start_date": "2000-01-01T00:00:00Z"})
    assert export.status_code == 200
    (tmp_path / "export.ndjson").write_bytes(export.content)
    for n in (1, 2, 3):
        out, _ = invoke(cli, "verify-export", str(tmp_path / "export.ndjson"), "--public-key",
                        str(tmp_path / "keys.json"), "--checkpoint", str(tmp_path / f"cp{n}.json"))
        assert out.startswith("OK") and "checkpoint signature: valid" in out
    out, _ = invoke(cli, "verify-export", str(tmp_path / "export.ndjson"), "--public-key",
                    str(tmp_path / "single.json"), "--checkpoint", str(tmp_path / "cp1.json"))
    assert "checkpoint signature: valid" in out
    _, err = invoke(cli, "verify-export", str(tmp_path / "export.ndjson"), "--public-key",
                    str(tmp_path / "single.json"), "--checkpoint", str(tmp_path / "cp3.json"), code=1)
    assert err == f"error: checkpoint was signed by key {cps[2].key_id}, not by the given key {cps[0].key_id}\n"

    rotations = [e for e in iter_chain(storage, tenant.org.id) if e["action"] == "integrity.signing_key_rotate"]
    assert [(e["source"], e["payload"]["retired_key_id"], e["payload"]["key_id"]) for e in rotations] == [
        ("cli", cps[0].key_id, cps[1].key_id), ("cli", cps[1].key_id, cps[2].key_id)]


def test_rotate_without_a_key_is_a_one_line_error(cli: CliRunner, key_path: Path) -> None:
    _, err = invoke(cli, "signing-key", "rotate", code=1)
    assert err == f"error: no signing key at {key_path}: nothing to rotate (the server creates one on first use)\n"
    assert not key_path.exists()


def test_an_organization_whose_chain_refuses_the_event_is_named_and_the_others_still_get_theirs(
    cli: CliRunner, storage: Storage
) -> None:
    """A damaged chain head in the second of three organizations: the key still rotates, the first and third
    record the rotation, the second is named on stderr with the reason, and the exit status is 1."""
    first, damaged, last = (make_tenant(storage) for _ in range(3))
    for tenant in (first, damaged, last):
        seed(storage, tenant.org.id, 2)
    old = orjson.loads(invoke(cli, "signing-key", "show")[0])["key_id"]
    with storage.write() as conn:  # as a database admin could: a head hash that is not hex ("da" is, "m" is not)
        conn.execute(sa.update(tables.chain_heads).where(tables.chain_heads.c.org_id == damaged.org.id)
                     .values(hash="damaged"))

    out, err = invoke(cli, "signing-key", "rotate", code=1)

    new = orjson.loads(out)["key_id"]
    assert new != old and orjson.loads(invoke(cli, "signing-key", "show")[0])["key_id"] == new
    assert [r["key_id"] for r in orjson.loads(out)["retired"]] == [old]
    lines = err.splitlines()
    assert lines[0] == (f"error: organization {damaged.org.name!r}: the rotation could not be recorded in its log: "
                        "ValueError: non-hexadecimal number found in fromhex() arg at position 2 "
                        f"(check it with `auditkeep verify --org {damaged.org.name}`)")
    assert lines[1].startswith(f"retired key {old} ")
    assert lines[2] == (f"error: the signing key was rotated all the same (now {new}), but 1 of 3 organizations "
                        f"have no integrity.signing_key_rotate event: {damaged.org.name}")
    assert len(lines) == 3
    for tenant in (first, last):
        rotations = [e for e in iter_chain(storage, tenant.org.id) if e["action"] == "integrity.signing_key_rotate"]
        assert [(e["payload"]["retired_key_id"], e["payload"]["key_id"]) for e in rotations] == [(old, new)]
    assert [e["action"] for e in iter_chain(storage, damaged.org.id)] == ["document.read", "document.update"]
