"""`auditkeep verify`, `checkpoint` and `verify-export` (issue #3), on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from auditkeep.cli import app
from auditkeep.integrity.checkpoints import load_checkpoint
from auditkeep.settings import Settings, get_settings
from auditkeep.storage import Storage
from auditkeep.storage.events import iter_chain
from tests.conftest import Tenant, make_tenant
from tests.integrity_db._tamper import seed, tampering, update_columns


@pytest.fixture
def cli(storage: Storage, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("AUDITKEEP_DATABASE_URL", storage.url)
    monkeypatch.setenv("AUDITKEEP_SIGNING_KEY_PATH", str(settings.signing_key_path))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def invoke(cli: CliRunner, *args: str, code: int = 0) -> tuple[str, str]:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout, result.stderr


def test_checkpoint_prints_signed_json_and_verify_passes(cli: CliRunner, storage: Storage, tenant: Tenant,
                                                        tmp_path: Path) -> None:
    seed(storage, tenant.org.id, 5)
    out, _ = invoke(cli, "checkpoint", "--org", tenant.org.name)
    checkpoint = load_checkpoint(out)
    assert checkpoint.tree_size == 5 and checkpoint.org == tenant.org.name
    saved = tmp_path / "cp.json"
    saved.write_text(out)
    out, _ = invoke(cli, "verify", "--org", tenant.org.name, "--checkpoint", str(saved))
    assert out.startswith("OK")
    actions = [e["action"] for e in iter_chain(storage, tenant.org.id)]
    assert actions[-2:] == ["integrity.checkpoint", "integrity.verify"]
    assert {e["source"] for e in iter_chain(storage, tenant.org.id, 5)} == {"cli"}


def test_verify_names_the_first_broken_seq(cli: CliRunner, storage: Storage, tenant: Tenant) -> None:
    seed(storage, tenant.org.id, 8)
    with tampering(storage) as conn:
        update_columns(conn, storage, tenant.org.id, 6, {"log_entry": "nothing to see"})
    out, err = invoke(cli, "verify", "--org", tenant.org.name, code=1)
    assert out.startswith("FAILED: seq 6: hash does not match")
    assert err.startswith("error: the log of") and "seq 6" in err and err.count("\n") == 1


def test_verify_refuses_a_checkpoint_of_another_org(cli: CliRunner, storage: Storage, tenant: Tenant,
                                                    tmp_path: Path) -> None:
    other = make_tenant(storage)
    out, _ = invoke(cli, "checkpoint", "--org", other.org.name)
    (tmp_path / "cp.json").write_text(out)
    _, err = invoke(cli, "verify", "--org", tenant.org.name, "--checkpoint", str(tmp_path / "cp.json"), code=1)
    assert "is for organization" in err


def _export(client: TestClient, tenant: Tenant, fmt: str) -> bytes:
    r = client.get("/api/v1/audit_logs", params={"include": "integrity", "format": fmt,
                                                 "start_date": "2000-01-01T00:00:00Z"}, headers=tenant.headers)
    assert r.status_code == 200
    return r.content


@pytest.mark.parametrize("fmt", ["json", "ndjson"])
def test_verify_export_end_to_end(cli: CliRunner, app_client: TestClient, storage: Storage, tenant: Tenant,
                                  tmp_path: Path, fmt: str) -> None:
    """Export via the API, key and checkpoint from the API, then offline: 0; one field edited: 1;
    the checkpoint's event removed: 2."""
    seed(storage, tenant.org.id, 9)
    checkpoint = app_client.post("/api/v1/integrity/checkpoints", headers=tenant.headers).content
    seed(storage, tenant.org.id, 3, start=9)
    key = tmp_path / "key.json"
    key.write_bytes(app_client.get("/api/v1/integrity/public_key", headers=tenant.headers).content)
    cp = tmp_path / "cp.json"
    cp.write_bytes(checkpoint)
    data = _export(app_client, tenant, fmt)
    export = tmp_path / f"export.{fmt}"
    export.write_bytes(data)

    out, _ = invoke(cli, "verify-export", str(export), "--public-key", str(key), "--checkpoint", str(cp))
    assert out.startswith("OK") and "checkpoint signature: valid" in out and "Merkle root recomputed" in out

    logs = orjson.loads(data)["logs"] if fmt == "json" else [orjson.loads(line) for line in data.splitlines()]

    def write(records: list[dict[str, object]]) -> None:
        if fmt == "json":
            export.write_bytes(orjson.dumps({"logs": records}))
        else:
            export.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")

    edited = [dict(log) for log in logs]
    edited[3]["action"] = "document.delete"
    write(edited)
    out, err = invoke(cli, "verify-export", str(export), "--public-key", str(key), "--checkpoint", str(cp), code=1)
    assert out.startswith(f"FAILED: seq {edited[3]['seq']}")
    assert err.startswith("error: seq 4")

    size = load_checkpoint(checkpoint).tree_size
    write([log for log in logs if log["seq"] != size])
    out, _ = invoke(cli, "verify-export", str(export), "--public-key", str(key), "--checkpoint", str(cp), code=2)
    assert out.startswith("INCONCLUSIVE")


def test_verify_export_needs_no_database(cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline: an unreachable database URL does not matter, a missing key file is a one-line error."""
    monkeypatch.setenv("AUDITKEEP_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    (tmp_path / "e.ndjson").write_text("")
    _, err = invoke(cli, "verify-export", str(tmp_path / "e.ndjson"), "--public-key", str(tmp_path / "no.pem"),
                    code=1)
    assert err.startswith("error: cannot read public key")
