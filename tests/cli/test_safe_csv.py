"""CSV exports whose text cells got a leading `'` (so no spreadsheet runs them) still verify with
`auditkeep verify-export` and round-trip through `auditkeep ingest`, on both backends (issue #11)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from auditkeep.cli import app
from auditkeep.settings import Settings, get_settings
from auditkeep.storage import Storage
from tests.api.test_hostile_input import HOSTILE_CELLS, URL, ev
from tests.cli.test_logs_ingest import auditkeep
from tests.conftest import Tenant, make_tenant
from tests.e2e.server import Server

BODY = [ev(action="csv.cell", timestamp=f"2024-05-01T10:00:0{n}Z", **cells) for n, cells in enumerate(HOSTILE_CELLS)]


@pytest.fixture
def cli(storage: Storage, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("AUDITKEEP_DATABASE_URL", storage.url)
    monkeypatch.setenv("AUDITKEEP_SIGNING_KEY_PATH", str(settings.signing_key_path))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_verify_export_of_a_csv_with_apostrophed_cells_exits_0(
    cli: CliRunner, app_client: TestClient, tenant: Tenant, tmp_path: Path
) -> None:
    assert app_client.post(URL, json=BODY, headers=tenant.headers).status_code == 201
    checkpoint = tmp_path / "cp.json"
    checkpoint.write_bytes(app_client.post("/api/v1/integrity/checkpoints", headers=tenant.headers).content)
    key = tmp_path / "key.json"
    key.write_bytes(app_client.get("/api/v1/integrity/public_key", headers=tenant.headers).content)
    r = app_client.get(URL, params={"format": "csv", "include": "integrity", "start_date": "2000-01-01T00:00:00Z"},
                       headers=tenant.headers)
    assert r.content.count(b'"\'=HYPERLINK(') == 1 and r.content.count(b'"\'@SUM(') == 1
    export = tmp_path / "export.csv"
    export.write_bytes(r.content)
    result = cli.invoke(app, ["verify-export", str(export), "--public-key", str(key), "--checkpoint", str(checkpoint)])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.stdout.startswith("OK") and "Merkle root recomputed" in result.stdout


@pytest.fixture(scope="module")
def server(database_url: str, storage: Storage) -> Iterator[Server]:
    srv = Server(database_url).start()
    yield srv
    srv.stop()


def _logs(server: Server, tenant: Tenant) -> list[dict[str, Any]]:
    r = httpx.get(server.url + URL, params={"action": "csv.cell"}, headers=tenant.headers, timeout=30)
    assert r.status_code == 200, r.text
    return list(r.json()["logs"])


@pytest.mark.e2e
def test_ingest_of_a_csv_export_gives_back_the_original_texts(
    server: Server, storage: Storage, tmp_path: Path
) -> None:
    source = make_tenant(storage)
    assert httpx.post(server.url + URL, json=BODY, headers=source.headers, timeout=30).status_code == 201
    out = tmp_path / "export.csv"
    auditkeep(source, "logs", "--url", server.url, "--action", "csv.cell", "--format", "csv", "-o", str(out),
              "--no-progress")
    assert out.read_bytes().count(b'"\'\'quoted already"') == 1
    target = make_tenant(storage)
    auditkeep(target, "ingest", str(out), "--url", server.url, "--no-progress")
    logs = _logs(server, target)
    assert logs == _logs(server, source)
    for log, sent in zip(logs, HOSTILE_CELLS, strict=True):
        assert {name: log[name] for name in sent} == sent
