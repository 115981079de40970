"""`auditkeep verify`, `checkpoint` and `verify-export` (issue #3), on both backends."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from auditkeep.cli import app
from auditkeep.client import Client
from auditkeep.client._files import iter_records
from auditkeep.integrity.checkpoints import export_public_key, load_checkpoint
from auditkeep.settings import Settings, get_settings
from auditkeep.storage import Storage
from auditkeep.storage.events import iter_chain
from tests.conftest import Tenant, make_tenant
from tests.integrity._events import fixed_key
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

    logs = list(iter_records(io.BytesIO(data), fmt))  # type: ignore[arg-type]

    def write(records: list[dict[str, object]]) -> None:
        if fmt == "json":
            export.write_bytes(orjson.dumps({"logs": records}))  # no query statement: held to completeness
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
    args = ("verify-export", str(export), "--public-key", str(key), "--checkpoint", str(cp))
    _, err = invoke(cli, *args, code=1)
    assert err == f"error: missing seq {size} (1 event)\n"
    out, _ = invoke(cli, *args, "--no-complete", code=2)
    assert out.startswith("INCONCLUSIVE")


def _drop(data: bytes, fmt: str, seqs: set[int]) -> bytes:
    """The export's bytes without the events at `seqs`, its query statement (if any) kept."""
    if fmt == "json":
        document = orjson.loads(data)
        document["logs"] = [log for log in document["logs"] if log["seq"] not in seqs]
        return orjson.dumps(document)
    newline = b"\r\n" if fmt == "csv" else b"\n"
    head, *lines = data.split(newline)  # the CSV header, or NDJSON's statement line
    kept = [head]
    for line in lines:
        text = head + newline + line if fmt == "csv" else line
        record = next(iter_records(io.BytesIO(text), fmt, statements=True), None)  # type: ignore[arg-type]
        if record is None or record.get("seq") not in seqs:
            kept.append(line)
    return newline.join(kept)


@pytest.mark.parametrize(
    ("removed", "message"),
    [
        ({17}, "missing seq 17 (1 event)"),
        (set(range(21, 31)), "missing seq 21-30 (10 events)"),
        (set(range(2, 40, 2)), "missing seq 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, ... 9 more range(s) (19 events)"),
    ],
    ids=["one", "ten", "every-other"],
)
@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_verify_export_fails_an_unfiltered_export_with_events_removed(
        cli: CliRunner, app_client: TestClient, storage: Storage, tenant: Tenant, tmp_path: Path,
        fmt: str, removed: set[int], message: str) -> None:
    """Events removed below the checkpoint from a server export: exit 1 naming the ranges; the untouched
    export verifies (0); --no-complete reports the gaps and passes (0)."""
    seed(storage, tenant.org.id, 40)
    cp = tmp_path / "cp.json"
    cp.write_bytes(app_client.post("/api/v1/integrity/checkpoints", headers=tenant.headers).content)
    assert load_checkpoint(cp.read_bytes()).tree_size == 40
    key = tmp_path / "key.json"
    key.write_bytes(app_client.get("/api/v1/integrity/public_key", headers=tenant.headers).content)
    data = _export(app_client, tenant, fmt)
    export = tmp_path / f"export.{fmt}"
    args = ("verify-export", str(export), "--public-key", str(key), "--checkpoint", str(cp))
    export.write_bytes(data)
    out, _ = invoke(cli, *args)
    assert out.startswith("OK: every event verifies")

    export.write_bytes(_drop(data, fmt, removed))
    out, err = invoke(cli, *args, code=1)
    assert out.startswith(f"FAILED: {message}\n")
    assert err == f"error: {message}\n"
    out, _ = invoke(cli, *args, "--no-complete")
    assert out.startswith("OK: every event verifies") and "gaps (not a failure: --no-complete)" in out


@pytest.mark.parametrize("fmt", ["json", "ndjson"])
def test_a_server_export_states_its_query(app_client: TestClient, storage: Storage, tenant: Tenant,
                                          fmt: str) -> None:
    """include=integrity: the statement comes first and says whether the query was filtered; the plain
    export (no include) is unchanged."""
    seed(storage, tenant.org.id, 6)
    r = app_client.get("/api/v1/audit_logs", params={"include": "integrity", "format": fmt, "action": "document.*",
                                                     "start_date": "2024-05-01T12:00:00Z", "limit": 4},
                       headers=tenant.headers)
    first = orjson.loads(r.content) if fmt == "json" else orjson.loads(r.content.split(b"\n")[0])
    assert first["query"] == {
        "start_date": "2024-05-01T12:00:00.000000Z", "end_date": None, "filters": {"action": "document.*"},
        "order": "asc", "after_seq": None, "cursor": False, "limit": 4, "filtered": True,
    }
    assert r.content.startswith(b'{"query":{')
    unfiltered = _export(app_client, tenant, fmt)
    statement = orjson.loads(unfiltered) if fmt == "json" else orjson.loads(unfiltered.split(b"\n")[0])
    assert statement["query"]["filtered"] is False and statement["query"]["filters"] == {}
    plain = app_client.get("/api/v1/audit_logs", params={"format": fmt}, headers=tenant.headers).content
    assert plain.startswith(b'{"logs":[{"action"' if fmt == "json" else b'{"action"')
    assert all("query" not in record for record in iter_records(io.BytesIO(plain), fmt, statements=True))  # type: ignore[arg-type]


def test_a_time_range_that_skips_a_back_dated_event_is_stated_filtered(
        app_client: TestClient, tenant: Tenant) -> None:
    """An event stored between two others but dated before the range: the range leaves out a seq inside
    the span it returns, so the statement says filtered."""
    body = [{"client_ip": "198.51.100.7", "url": f"https://a.example/{n}", "action": "doc.read",
             "timestamp": ts} for n, ts in enumerate(["2024-05-02T00:00:00Z", "2024-04-01T00:00:00Z",
                                                       "2024-05-03T00:00:00Z"])]
    for event in body:  # one request each: seqs follow the list
        assert app_client.post("/api/v1/audit_logs", json=event, headers=tenant.headers).status_code == 201

    def filtered(start: str) -> bool:
        r = app_client.get("/api/v1/audit_logs", params={"include": "integrity", "format": "ndjson",
                                                         "start_date": start, "end_date": "2024-06-01T00:00:00Z"},
                           headers=tenant.headers)
        return bool(orjson.loads(r.content.split(b"\n")[0])["query"]["filtered"])

    assert filtered("2024-05-01T00:00:00Z") is True
    assert filtered("2024-03-01T00:00:00Z") is False


def test_a_paged_export_decides_filtered_once_per_walk(app_client: TestClient, tenant: Tenant,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every page of a time-ranged include=integrity walk states the first page's `filtered`, and the
    range is scanned for it once, not once per page (its signed cursor carries it)."""
    from auditkeep.api import log_responses

    body = [{"client_ip": "198.51.100.7", "url": f"https://a.example/{n}", "action": "doc.read",
             "timestamp": ts} for n, ts in enumerate(["2024-05-02T00:00:00Z", "2024-04-01T00:00:00Z",
                                                       *[f"2024-05-{d:02d}T00:00:00Z" for d in range(3, 9)]])]
    for event in body:  # one request each: seqs follow the list
        assert app_client.post("/api/v1/audit_logs", json=event, headers=tenant.headers).status_code == 201
    scans: list[int] = []
    real = log_responses.range_skips_inside
    monkeypatch.setattr(log_responses, "range_skips_inside", lambda *a: scans.append(1) or real(*a))
    statements: list[dict[str, object]] = []
    params: dict[str, str] | None = {"include": "integrity", "format": "ndjson", "limit": "2",
                              "start_date": "2024-05-01T00:00:00Z", "end_date": "2024-06-01T00:00:00Z"}
    url: str | None = "/api/v1/audit_logs"
    while url is not None:
        r = app_client.get(url, params=params, headers=tenant.headers)
        assert r.status_code == 200
        statements.append(orjson.loads(r.content.split(b"\n")[0])["query"])
        url, params = (r.links["next"]["url"], None) if "next" in r.links else (None, None)
    assert len(statements) == 4 and all(s["filtered"] is True for s in statements)
    assert [s["cursor"] for s in statements] == [False, True, True, True]
    assert len(scans) == 1


@pytest.mark.parametrize("fmt", ["json", "ndjson"])
def test_a_filtered_export_reports_its_gaps_and_passes(cli: CliRunner, app_client: TestClient, storage: Storage,
                                                       tenant: Tenant, tmp_path: Path, fmt: str) -> None:
    """An action-filtered export has gaps (the other actions): exit 0, the gaps reported; --complete: 1."""
    seed(storage, tenant.org.id, 12)
    key = tmp_path / "key.json"
    key.write_bytes(app_client.get("/api/v1/integrity/public_key", headers=tenant.headers).content)
    r = app_client.get("/api/v1/audit_logs", params={"include": "integrity", "format": fmt,
                                                     "action": "document.read"}, headers=tenant.headers)
    export = tmp_path / f"export.{fmt}"
    export.write_bytes(r.content)
    out, _ = invoke(cli, "verify-export", str(export), "--public-key", str(key))
    assert out.startswith("OK: every event verifies")
    assert "export states its query: filtered (not signed)" in out
    assert ("gaps (not a failure: the export states its query is filtered): 5 seq(s) absent: "
            "2, 4, 6, 8, 10") in out
    _, err = invoke(cli, "verify-export", str(export), "--public-key", str(key), "--complete", code=1)
    assert err == "error: missing seq 2, 4, 6, 8, 10 (5 events)\n"


@pytest.mark.parametrize("fmt", ["json", "ndjson"])
def test_an_sdk_export_carries_the_statement_and_verifies(cli: CliRunner, app_client: TestClient,
                                                         storage: Storage, tenant: Tenant, tmp_path: Path,
                                                         fmt: str) -> None:
    """Client.export(integrity=True) over several pages: one statement, first; verify-export: 0."""
    seed(storage, tenant.org.id, 23)
    cp = tmp_path / "cp.json"
    cp.write_bytes(app_client.post("/api/v1/integrity/checkpoints", headers=tenant.headers).content)
    key = tmp_path / "key.json"
    key.write_bytes(app_client.get("/api/v1/integrity/public_key", headers=tenant.headers).content)
    export = tmp_path / f"export.{fmt}"
    with Client(tenant.admin_key, "http://testserver", transport=app_client._transport) as client:
        result = client.export(fmt, export, page_size=5, integrity=True)  # type: ignore[arg-type]
    data = export.read_bytes()
    assert data.startswith(b'{"query":{"start_date":null,')
    records = list(iter_records(io.BytesIO(data), fmt, statements=True))  # type: ignore[arg-type]
    assert [r for r in records if "seq" not in r] == [records[0]]  # one statement, the first record
    assert records[0]["query"]["filtered"] is False and records[0]["query"]["limit"] == 5
    assert [r["seq"] for r in records[1:]] == list(range(1, result.events + 1))
    out, _ = invoke(cli, "verify-export", str(export), "--public-key", str(key), "--checkpoint", str(cp))
    assert out.startswith("OK: every event verifies") and "export states its query: unfiltered" in out


def test_verify_export_needs_no_database(cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline: an unreachable database URL does not matter, a missing key file is a one-line error."""
    monkeypatch.setenv("AUDITKEEP_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    (tmp_path / "e.ndjson").write_text("")
    _, err = invoke(cli, "verify-export", str(tmp_path / "e.ndjson"), "--public-key", str(tmp_path / "no.pem"),
                    code=1)
    assert err.startswith("error: cannot read public key")


# Values a CSV cell has to carry exactly for the hash to match: quotes, commas, CR/LF inside text, "" versus
# null, non-ASCII, floats the canonical form writes the ECMAScript way, the largest safe integers.
AWKWARD_EVENTS: list[dict[str, object]] = [
    {"log_entry": 'quotes " and, commas\r\nCRLF and\nLF', "referer": "", "user_agent": None,
     "payload": {"f": [0.1, 1e21, -0.0, 1.5e-7, 2**53 - 1, -(2**53 - 1)], "s": "\u2028 é 😀 \t", "e": ""}},
    {"log_entry": "", "is_support_user": True, "object_id": 0, "user_id": 2**53 - 1, "status": "ends in CR\r"},
    {"log_entry": '""', "is_support_user": False, "object_id": -5, "payload": {"n": {"a": [None, True, {}]}}},
    {"log_entry": "=HYPERLINK(\"x\")", "payload": {}, "object_type": "tamper-me"},
    {"log_entry": "true", "action": "null", "source": "1", "request_type": ","},
]


def test_verify_export_of_a_csv_export_with_integrity(cli: CliRunner, app_client: TestClient, tenant: Tenant,
                                                     tmp_path: Path) -> None:
    """A CSV export with include=integrity of awkward events verifies (0); one cell edited fails (1) naming
    its seq; a CSV without the integrity columns or with a broken row is a one-line error (1)."""
    body = [{"client_ip": "198.51.100.7", "url": f"https://app.example.com/{n}", "action": "doc.read",
             "timestamp": f"2024-05-01T10:00:0{n}.{n:06d}Z", **extra} for n, extra in enumerate(AWKWARD_EVENTS)]
    assert app_client.post("/api/v1/audit_logs", json=body, headers=tenant.headers).status_code == 201
    checkpoint = tmp_path / "cp.json"
    checkpoint.write_bytes(app_client.post("/api/v1/integrity/checkpoints", headers=tenant.headers).content)
    key = tmp_path / "key.json"
    key.write_bytes(app_client.get("/api/v1/integrity/public_key", headers=tenant.headers).content)
    data = _export(app_client, tenant, "csv")
    assert data.startswith(b"action,") and data.count(b'"tamper-me"') == 1
    export = tmp_path / "export.csv"
    export.write_bytes(data)
    args = ("verify-export", str(export), "--public-key", str(key), "--checkpoint", str(checkpoint))

    out, _ = invoke(cli, *args)
    assert out.startswith("OK") and "checkpoint signature: valid" in out and "Merkle root recomputed" in out
    events = list(iter_records(io.BytesIO(data), "csv"))
    assert [e["log_entry"] for e in events[:5]] == [e.get("log_entry") for e in AWKWARD_EVENTS]
    assert events[0]["user_agent"] is None and events[0]["referer"] == ""

    seq = next(e["seq"] for e in events if e["object_type"] == "tamper-me")
    export.write_bytes(data.replace(b'"tamper-me"', b'"tampered"'))
    out, err = invoke(cli, *args, code=1)
    assert out.startswith(f"FAILED: seq {seq}: hash does not match the event's content")
    assert err == f"error: seq {seq}: hash does not match the event's content\n"

    plain = app_client.get("/api/v1/audit_logs", params={"format": "csv", "start_date": "2000-01-01T00:00:00Z"},
                           headers=tenant.headers).content
    export.write_bytes(plain)
    _, err = invoke(cli, *args, code=1)
    assert err == "error: event #1 has no positive integer seq; export with include=integrity\n"

    export.write_bytes(data + b'"cut short",1\r\n')
    _, err = invoke(cli, *args, code=1)
    assert err.startswith(f"error: {export} (read as CSV): row {len(events) + 2}: 2 cells for 22 columns")


@pytest.mark.parametrize(("name", "raw", "where"), [
    ("export.json", b'{"logs": [{"seq": 1}, {"seq": 2,}]}', "(read as JSON): log 1: not valid JSON"),
    ("export.json", b'{"seq": 1}\n{"seq": 2\n', "(read as NDJSON): line 2: not JSON"),
    ("export.ndjson", b'{"seq": 1}\n[2]\n', "(read as NDJSON): line 2: not a JSON object"),
])
def test_verify_export_of_a_broken_file_is_a_one_line_error_saying_where(
        cli: CliRunner, tmp_path: Path, name: str, raw: bytes, where: str) -> None:
    key = tmp_path / "key.pem"
    key.write_bytes(export_public_key(fixed_key().public_key()))
    export = tmp_path / name
    export.write_bytes(raw)
    out, err = invoke(cli, "verify-export", str(export), "--public-key", str(key), code=1)
    assert out == ""
    assert err.startswith(f"error: {export} {where}") and err.count("\n") == 1
