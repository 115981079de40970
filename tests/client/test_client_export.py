"""export: streamed files in three formats, resumable after an interruption."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from sdk_fakes import SOURCE, Backend, FakeAuditServer, Flaky, NoWait, make_event

from auditkeep.client import ExportResult, ResumeError, TransportError
from auditkeep.schemas.audit_logs import LOG_FIELDS

N = 23


@pytest.fixture
def stored(backend: Backend) -> list[str]:
    """23 events, some with awkward text for CSV (quotes, commas, newlines); their uuids in order."""
    events = [make_event(n, log_entry='said "hi",\nthen left' if n % 5 == 0 else None,
                         payload={"n": n} if n % 2 else None) for n in range(N)]
    with backend.client() as client:
        return client.publish(events)


def uuids_in(path: Path, fmt: str) -> list[str]:
    """The event_uuids an export file holds, in file order."""
    text = path.read_text("utf-8")
    if fmt == "json":
        return [log["event_uuid"] for log in json.loads(text)["logs"]]
    if fmt == "ndjson":
        return [json.loads(line)["event_uuid"] for line in text.splitlines()]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(LOG_FIELDS) if rows else True
    return [row["event_uuid"] for row in rows]


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_export_writes_every_event_once(stored: list[str], backend: Backend, tmp_path: Path,
                                        fmt: str) -> None:
    path = tmp_path / f"out.{fmt}"
    progress: list[int] = []
    with backend.client() as client:
        result = client.export(fmt, path, page_size=5, progress=progress.append,  # type: ignore[arg-type]
                               source=SOURCE)
    assert uuids_in(path, fmt) == stored
    assert result == ExportResult(events=N, bytes=path.stat().st_size, resumed=False, path=path)
    assert progress == [5, 10, 15, 20, 23]
    assert not (tmp_path / f"out.{fmt}.resume.json").exists()


def test_a_csv_export_keeps_multiline_text_intact(stored: list[str], backend: Backend,
                                                  tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    with backend.client() as client:
        client.export("csv", path, page_size=4, source=SOURCE)
    rows = list(csv.DictReader(io.StringIO(path.read_text("utf-8"))))
    assert rows[0]["log_entry"] == 'said "hi",\nthen left'
    assert json.loads(rows[1]["payload"]) == {"n": 1}
    assert path.read_text("utf-8").count("action,client_ip") == 1


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_an_empty_export_is_still_a_valid_file(backend: Backend, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"out.{fmt}"
    with backend.client() as client:
        assert client.export(fmt, path, source=SOURCE).events == 0  # type: ignore[arg-type]
    assert uuids_in(path, fmt) == []
    if fmt == "json":
        assert json.loads(path.read_text()) == {"logs": []}


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_an_interrupted_export_resumes_where_it_stopped(stored: list[str], backend: Backend, tmp_path: Path,
                                                        fmt: str) -> None:
    """The service goes away during page 3 (after half its bytes); a second run finishes the file."""
    path = tmp_path / f"out.{fmt}"
    flaky = Flaky(backend.make_transport(), "ok", "ok", "cut:200", "connect", "connect")
    with backend.client(transport=flaky, retry=NoWait(max_retries=1)) as client, \
            pytest.raises(TransportError):
        client.export(fmt, path, page_size=5, source=SOURCE)  # type: ignore[arg-type]
    state = json.loads((tmp_path / f"out.{fmt}.resume.json").read_text())
    assert state["events"] == 10
    assert path.stat().st_size == state["offset"]  # the half page was cut off

    with backend.client() as client:
        result = client.export(fmt, path, page_size=5, source=SOURCE)  # type: ignore[arg-type]
    assert result.resumed
    assert result.events == N
    assert uuids_in(path, fmt) == stored
    assert not (tmp_path / f"out.{fmt}.resume.json").exists()


def test_a_crash_mid_page_is_cut_back_on_resume(stored: list[str], backend: Backend,
                                                tmp_path: Path) -> None:
    """Bytes of a page that was never committed (the process died) are dropped when resuming."""
    path = tmp_path / "out.ndjson"
    flaky = Flaky(backend.make_transport(), "ok", "connect")
    with backend.client(transport=flaky, retry=NoWait(max_retries=0)) as client, \
            pytest.raises(TransportError):
        client.export("ndjson", path, page_size=10, source=SOURCE)
    with path.open("ab") as file:
        file.write(b'{"event_uuid": "half-written')
    with backend.client() as client:
        client.export("ndjson", path, page_size=10, source=SOURCE)
    assert uuids_in(path, "ndjson") == stored


def test_a_page_that_breaks_off_is_retried_in_process(stored: list[str], backend: Backend,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    flaky = Flaky(backend.make_transport(), "ok", "cut:100", "cut:300")
    with backend.client(transport=flaky) as client:
        result = client.export("ndjson", path, page_size=10, source=SOURCE)
    assert not result.resumed
    assert uuids_in(path, "ndjson") == stored


def test_resuming_with_other_options_is_refused(stored: list[str], backend: Backend,
                                                tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    flaky = Flaky(backend.make_transport(), "ok", "connect")
    with backend.client(transport=flaky, retry=NoWait(max_retries=0)) as client, \
            pytest.raises(TransportError):
        client.export("ndjson", path, page_size=5, source=SOURCE)
    with backend.client() as client:
        with pytest.raises(ResumeError, match="other options"):
            client.export("ndjson", path, page_size=5, action="thing.1", source=SOURCE)
        # Starting over is explicit.
        result = client.export("ndjson", path, page_size=5, action="thing.1", resume=False, source=SOURCE)
    assert result.events == 8
    assert not result.resumed


def test_a_finished_export_run_again_starts_over(stored: list[str], backend: Backend,
                                                 tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    with backend.client() as client:
        client.export("json", path, page_size=10, source=SOURCE)
        second = client.export("json", path, page_size=10, source=SOURCE)
    assert not second.resumed
    assert uuids_in(path, "json") == stored


def test_export_to_a_file_object(stored: list[str], backend: Backend) -> None:
    out = io.BytesIO()
    with backend.client() as client:
        result = client.export("ndjson", out, page_size=6, order="desc", source=SOURCE)
    assert result.path is None
    assert [json.loads(line)["event_uuid"] for line in out.getvalue().splitlines()] == stored[::-1]


def test_export_asks_for_ndjson_pages_when_writing_json(stored: list[str], backend: Backend,
                                                        fake: FakeAuditServer, tmp_path: Path) -> None:
    with backend.client() as client:
        client.export("json", tmp_path / "out.json", page_size=10, user_email="user1@example.com",
                      source=SOURCE)
    first = fake.requests[-1]
    assert first.url.params["format"] == "ndjson"
    assert first.url.params["user_email"] == "user1@example.com"
    assert first.headers["Accept"] == "application/x-ndjson"


@pytest.mark.anyio
async def test_async_export_resumes(stored: list[str], backend: Backend, tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    flaky = Flaky(backend.make_async_transport(), "ok", "cut:50", "connect", "connect")
    async with backend.async_client(transport=flaky, retry=NoWait(max_retries=1)) as client:
        with pytest.raises(TransportError):
            await client.export("csv", path, page_size=5, source=SOURCE)
    async with backend.async_client() as client:
        result = await client.export("csv", path, page_size=5, source=SOURCE)
    assert result.resumed
    assert uuids_in(path, "csv") == stored
