"""Evidence bundles (issue #12), on both backends: made by the CLI and the API, checked by both readers
(auditkeep's verify-bundle and tests/evidence/independent_verifier.py), every kind of tampering named."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from auditkeep.auth.principals import Role
from auditkeep.cli import app
from auditkeep.evidence import workers
from auditkeep.evidence.checking import verify_bundle
from auditkeep.ingest.checkpointing import make_checkpoint
from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.settings import Settings, get_settings
from auditkeep.storage import Storage
from auditkeep.storage.events import iter_chain
from tests.conftest import Tenant, make_tenant
from tests.evidence import independent_verifier
from tests.integrity_db._tamper import seed

# seq 1..6 seeded, a checkpoint at 6 (its record is seq 7, timestamped now), seq 8..21 seeded, a checkpoint
# at 21 (record seq 22). RANGE holds seq 8..21: contiguous and unfiltered, between the two checkpoints.
RANGE = {"start_date": "2024-05-01T12:00:06Z", "end_date": "2025-01-01T00:00:00Z"}


@pytest.fixture
def cli(storage: Storage, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("AUDITKEEP_DATABASE_URL", storage.url)
    monkeypatch.setenv("AUDITKEEP_SIGNING_KEY_PATH", str(settings.signing_key_path))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def _log(storage: Storage, tenant: Tenant) -> None:
    seed(storage, tenant.org.id, 6)
    make_checkpoint(storage, tenant.org.id)
    seed(storage, tenant.org.id, 14, start=6)
    make_checkpoint(storage, tenant.org.id)


def _cli_bundle(cli: CliRunner, tenant: Tenant, out: Path, *args: str) -> Path:
    result = cli.invoke(app, ["evidence", "--org", tenant.org.name, "--output", str(out), *args])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return out


def _api_bundle(client: TestClient, tenant: Tenant, out: Path, **params: str) -> Path:
    r = client.get("/api/v1/evidence", params=params, headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    out.write_bytes(r.content)
    return out


def _verify_cli(cli: CliRunner, bundle: Path) -> tuple[int, str]:
    result = cli.invoke(app, ["verify-bundle", str(bundle)])
    return result.exit_code, result.stdout


@pytest.fixture
def bundle(cli: CliRunner, storage: Storage, tenant: Tenant, tmp_path: Path) -> Path:
    _log(storage, tenant)
    return _cli_bundle(cli, tenant, tmp_path / "b.zip", "--start", RANGE["start_date"], "--end", RANGE["end_date"])


def test_cli_and_api_bundles_hold_the_same_content_and_both_readers_accept_them(
        cli: CliRunner, app_client: TestClient, storage: Storage, tenant: Tenant, tmp_path: Path) -> None:
    """Same query, same snapshot: the same events, checkpoints and proofs; both verify with both readers."""
    _log(storage, tenant)
    made = _cli_bundle(cli, tenant, tmp_path / "cli.zip", "--start", RANGE["start_date"], "--end", RANGE["end_date"])
    served = _api_bundle(app_client, tenant, tmp_path / "api.zip", **RANGE)
    with zipfile.ZipFile(made) as a, zipfile.ZipFile(served) as b:
        assert sorted(a.namelist()) == sorted(b.namelist()) == sorted(
            ["events.ndjson", "checkpoints.json", "proofs.json", "public_key.json", "README.txt", "report.html",
             "manifest.json"])
        for name in ("events.ndjson", "checkpoints.json", "proofs.json", "public_key.json", "README.txt"):
            assert a.read(name) == b.read(name), name
        manifest = json.loads(a.read("manifest.json"))
        assert json.loads(b.read("manifest.json"))["query"] == manifest["query"]
        events = a.read("events.ndjson").decode().splitlines()
        proofs = json.loads(a.read("proofs.json"))
        checkpoints = json.loads(a.read("checkpoints.json"))
        report = a.read("report.html").decode()
    assert manifest["organization"] == tenant.org.name
    assert (manifest["first_seq"], manifest["last_seq"], manifest["counts"]["events"]) == (8, 21, 14)
    assert manifest["query"]["filtered"] is False
    assert json.loads(events[0]) == {"query": manifest["query"]}
    assert [json.loads(line)["seq"] for line in events[1:]] == list(range(8, 22))
    assert checkpoints["before"]["tree_size"] == 6 and checkpoints["after"]["tree_size"] == 21
    assert proofs["range"]["first_seq"] == 8 and len(proofs["range"]["left"]) == 3 and proofs["inclusion"] == []
    assert proofs["consistency"]["first"] == 6 and proofs["consistency"]["proof"]
    assert "<script" not in report and "http" not in report.split("<body>")[0]
    assert "document.update" in report and "holds" in report
    for path in (made, served):
        assert _verify_cli(cli, path)[0] == 0
        assert independent_verifier.verify(path) == []


def test_the_bundles_events_are_the_ndjson_export_with_integrity(app_client: TestClient, bundle: Path,
                                                                  tenant: Tenant) -> None:
    """events.ndjson is byte for byte GET /api/v1/audit_logs?include=integrity&format=ndjson of the range."""
    r = app_client.get("/api/v1/audit_logs", params={**RANGE, "include": "integrity", "format": "ndjson"},
                       headers=tenant.headers)
    with zipfile.ZipFile(bundle) as zf:
        assert zf.read("events.ndjson") == r.content


def _rewrite(path: Path, edit: Callable[[dict[str, bytes]], None], *, rehash: bool = True) -> None:
    """Edit the bundle's files; with `rehash`, update the manifest's SHA-256s too, as an attacker would."""
    with zipfile.ZipFile(path) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    edit(files)
    if rehash:
        manifest = json.loads(files["manifest.json"])
        manifest["files"] = {n: hashlib.sha256(files[n]).hexdigest() for n in manifest["files"] if n in files}
        files["manifest.json"] = json.dumps(manifest).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    path.write_bytes(buffer.getvalue())


def _lines(files: dict[str, bytes]) -> list[bytes]:
    return files["events.ndjson"].splitlines(keepends=True)


def _change(files: dict[str, bytes]) -> None:
    lines = _lines(files)
    event = json.loads(lines[3])
    event["log_entry"] = "nothing happened"
    lines[3] = json.dumps(event).encode() + b"\n"
    files["events.ndjson"] = b"".join(lines)


def _drop(index: int) -> Callable[[dict[str, bytes]], None]:
    def edit(files: dict[str, bytes]) -> None:
        lines = _lines(files)
        del lines[index]
        files["events.ndjson"] = b"".join(lines)
    return edit


def _reorder(files: dict[str, bytes]) -> None:
    lines = _lines(files)
    lines[3], lines[4] = lines[4], lines[3]
    files["events.ndjson"] = b"".join(lines)


def _add(files: dict[str, bytes]) -> None:
    """A forged event after the last, its hash and link recomputed from the documented canonical form."""
    lines = _lines(files)
    last = json.loads(lines[-1])
    forged = {**last, "seq": last["seq"] + 1, "event_uuid": "00000000-0000-4000-8000-000000000001",
              "prev_hash": last["hash"], "log_entry": "forged"}
    forged["hash"] = hashlib.sha256(bytes.fromhex(last["hash"])
                                    + independent_verifier.canonical(forged)).hexdigest()
    files["events.ndjson"] = b"".join(lines) + json.dumps(forged).encode() + b"\n"


def _bad_proof(files: dict[str, bytes]) -> None:
    proofs = json.loads(files["proofs.json"])
    proofs["range"]["left"][0] = "00" * 32
    files["proofs.json"] = json.dumps(proofs).encode()


def _bad_signature(files: dict[str, bytes]) -> None:
    checkpoints = json.loads(files["checkpoints.json"])
    signature = checkpoints["after"]["signature"]
    checkpoints["after"]["signature"] = ("1" if signature[0] != "1" else "2") + signature[1:]
    files["checkpoints.json"] = json.dumps(checkpoints).encode()


def _edit_report(files: dict[str, bytes]) -> None:
    files["report.html"] = files["report.html"].replace(b"holds", b"HOLDS")


TAMPERING = {
    # kind: (edit, rehash the manifest, what verify-bundle names, what the independent reader names)
    "changed event": (_change, True, "hash does not match the event's content", "changed: seq 10"),
    "missing event": (_drop(-1), True, "range proof: covers seq 8..21", "bad range proof"),
    "reordered events": (_reorder, True, "out of order", "reordered"),
    "added event": (_add, True, "seq 22: beyond the after checkpoint's tree size 21", "added"),
    "bad proof": (_bad_proof, True, "range proof: the Merkle root", "bad range proof: root differs"),
    "bad signature": (_bad_signature, True, "the after checkpoint's signature does not verify", "bad signature"),
    "SHA-256 mismatch": (_edit_report, False, "report.html: SHA-256", "sha256 mismatch: report.html"),
    "gap in an unfiltered bundle": (_drop(5), True, "missing seq 12 (1 event) from an unfiltered bundle", "gap"),
}


@pytest.mark.parametrize("kind", list(TAMPERING))
def test_each_kind_of_tampering_is_caught_and_named_by_both_readers(cli: CliRunner, bundle: Path, kind: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    edit, rehash, ours, theirs = TAMPERING[kind]
    _rewrite(bundle, edit, rehash=rehash)
    code, out = _verify_cli(cli, bundle)
    assert code == 1, out
    failed = [line for line in out.splitlines() if line.startswith("failed: ")]
    assert any(ours in line for line in failed), (kind, failed)
    assert any(theirs in failure for failure in independent_verifier.verify(bundle)), kind
    # A large bundle's events are checked by worker processes: the same report, runs of ~2 events each.
    monkeypatch.setattr(workers, "RUN", 1500)
    assert verify_bundle(bundle, workers=2).failures == verify_bundle(bundle, workers=1).failures == [
        line.removeprefix("failed: ") for line in failed]


def test_an_unreadable_bundle_is_exit_2(cli: CliRunner, tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    assert _verify_cli(cli, junk)[0] == 2


def test_a_filtered_bundle_carries_inclusion_proofs_and_is_not_held_to_completeness(
        cli: CliRunner, storage: Storage, tenant: Tenant, tmp_path: Path) -> None:
    """action=document.update: every other seq, stated filtered, one inclusion proof each; the unfiltered
    bundle of the same range carries one range proof and every seq."""
    _log(storage, tenant)
    filtered = _cli_bundle(cli, tenant, tmp_path / "f.zip", "--start", RANGE["start_date"], "--end",
                           RANGE["end_date"], "--action", "document.update")
    whole = _cli_bundle(cli, tenant, tmp_path / "u.zip", "--start", RANGE["start_date"], "--end", RANGE["end_date"])
    with zipfile.ZipFile(filtered) as f, zipfile.ZipFile(whole) as u:
        fm, um = json.loads(f.read("manifest.json")), json.loads(u.read("manifest.json"))
        fp, up = json.loads(f.read("proofs.json")), json.loads(u.read("proofs.json"))
    assert fm["query"]["filtered"] is True and fm["query"]["filters"] == {"action": "document.update"}
    assert um["query"]["filtered"] is False
    assert [p["seq"] for p in fp["inclusion"]] == [9, 11, 13, 15, 17, 19, 21] and fp["range"] is None
    assert up["range"] is not None and um["counts"]["events"] == 14
    for path in (filtered, whole):
        assert _verify_cli(cli, path)[0] == 0
        assert independent_verifier.verify(path) == []
    # Removing an event from a filtered bundle is still caught: its inclusion proof has no event.
    _rewrite(filtered, _drop(2))
    code, out = _verify_cli(cli, filtered)
    assert code == 1 and "which events.ndjson lacks" in out


def test_making_a_bundle_is_audited(cli: CliRunner, bundle: Path, storage: Storage, tenant: Tenant) -> None:
    last = list(iter_chain(storage, tenant.org.id))[-1]
    assert last["action"] == "evidence.export" and last["source"] == "cli"
    payload = last["payload"]
    assert payload["events"] == 14 and (payload["first_seq"], payload["last_seq"]) == (8, 21)
    assert payload["query"]["start_date"] == "2024-05-01T12:00:06.000000Z" and payload["query"]["filtered"] is False


def test_a_viewonly_key_is_refused(app_client: TestClient, storage: Storage, tenant: Tenant) -> None:
    _, key = tenant.user(Role.VIEWONLY)
    r = app_client.get("/api/v1/evidence", headers={"Authorization": f"Key {key}"})
    assert r.status_code == 403
    assert isinstance(r.json()["detail"], str)


def test_another_organizations_events_are_never_in_a_bundle(app_client: TestClient, storage: Storage,
                                                            tenant: Tenant, tmp_path: Path) -> None:
    other = make_tenant(storage)
    theirs = set(seed(storage, other.org.id, 10))
    _log(storage, tenant)
    path = _api_bundle(app_client, tenant, tmp_path / "mine.zip")
    with zipfile.ZipFile(path) as zf:
        events = [json.loads(line) for line in zf.read("events.ndjson").splitlines()[1:]]
        checkpoints = json.loads(zf.read("checkpoints.json"))
    assert events and not theirs & {e["event_uuid"] for e in events}
    assert {checkpoints["after"]["org"]} == {tenant.org.name}
    assert independent_verifier.verify(path) == []


@pytest.mark.parametrize("params", [{"limit": "5"}, {"cursor": "x", "order": "desc"}, {"format": "csv"},
                                    {"user_emial": "ann@example.com"}])
def test_parameters_a_bundle_does_not_take_are_a_422(app_client: TestClient, tenant: Tenant,
                                                     params: dict[str, str]) -> None:
    """Paging, order, format and unknown names are refused in FastAPI's shape, one entry each, and no
    bundle is made (GET /api/v1/audit_logs, by contrast, ignores unknown names)."""
    r = app_client.get("/api/v1/evidence", params={**RANGE, **params}, headers=tenant.headers)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert [(d["type"], d["loc"]) for d in detail] == [("extra_forbidden", ["query", name]) for name in params]
    assert all(isinstance(d["msg"], str) and d["input"] == params[d["loc"][1]] for d in detail)
    assert app_client.get("/api/v1/audit_logs", params={"user_emial": "x"}, headers=tenant.headers).status_code == 200


def test_zip_entries_are_dated_when_the_bundle_was_made(bundle: Path) -> None:
    """Not zipfile's 1980 default: every entry carries the manifest's created_at (UTC, 2-second precision)."""
    with zipfile.ZipFile(bundle) as zf:
        made = json.loads(zf.read("manifest.json"))["created_at"]
        dates = {info.date_time for info in zf.infolist()}
    year, month, day = int(made[:4]), int(made[5:7]), int(made[8:10])
    hour, minute, second = int(made[11:13]), int(made[14:16]), int(made[17:19])
    assert dates == {(year, month, day, hour, minute, second - second % 2)}


def test_the_reports_counts_are_those_of_the_events_in_the_bundle(cli: CliRunner, storage: Storage, tenant: Tenant,
                                                                  tmp_path: Path) -> None:
    """The counts come from database columns beside each event's JSON (booleans 0/1 on SQLite, days
    formatted by PostgreSQL): they must equal what the events themselves say."""
    _log(storage, tenant)
    seed(storage, tenant.org.id, 3, start=40)  # more events after the second checkpoint, in the bundle too
    failed = {"action": "login", "status": "failure", "user_id": 9, "client_ip": "198.51.100.4", "url": "https://x/"}
    record_events(storage, tenant.org.id, parse_events(orjson.dumps([failed]), datetime.now(UTC)))
    path = _cli_bundle(cli, tenant, tmp_path / "all.zip")
    with zipfile.ZipFile(path) as zf:
        events = [json.loads(line) for line in zf.read("events.ndjson").splitlines()[1:]]
        counts = json.loads(zf.read("manifest.json"))["counts"]
        report = zf.read("report.html").decode()

    def actor(e: dict[str, object]) -> str:
        return str(e["user_email"]) if e["user_email"] else "(none)" if e["user_id"] is None else f"user {e['user_id']}"

    assert counts == {
        "events": len(events),
        "failures": sum(e["status"] not in (None, "success") for e in events),
        "support_user_events": sum(e["is_support_user"] is True for e in events),
        "actions": len({e["action"] for e in events}), "actors": len({actor(e) for e in events}),
        "days": len({e["timestamp"][:10] for e in events}),
    }
    assert counts["support_user_events"] > 0 and counts["failures"] == 1 and counts["days"] >= 2
    assert "user 9" in report and "login" in report
    for day in {e["timestamp"][:10] for e in events}:
        assert day in report
