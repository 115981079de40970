"""read_export: export files in the three formats read back as events, in constant memory."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sdk_fakes import SOURCE, Backend, FakeAuditServer, make_event

from auditkeep.client import Client, ExportFileError, read_export
from auditkeep.client._files import detect_format, iter_records
from auditkeep.schemas.audit_logs import LOG_FIELDS

AWKWARD: list[dict[str, Any]] = [
    {"log_entry": 'quotes " and, commas\nand newlines', "payload": {"nested": {"list": [1, "二"]}}},
    {"is_support_user": True, "object_type": "datasource", "object_id": 2**53 - 1},
    {"is_support_user": False, "user_agent": "Agënt ✓", "payload": {}},
    {},
]


@pytest.fixture
def stored(backend: Backend) -> list[dict[str, Any]]:
    """Events with awkward values, as the service returns them."""
    with backend.client() as client:
        client.publish([make_event(n, **extra) for n, extra in enumerate(AWKWARD * 3)])
        return list(client.iter_audit_logs(source=SOURCE))


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_an_export_reads_back_as_the_events_it_holds(stored: list[dict[str, Any]], backend: Backend,
                                                     tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"out.{fmt}"
    with backend.client() as client:
        client.export(fmt, path, page_size=5, source=SOURCE)  # type: ignore[arg-type]
    events = list(read_export(path))
    assert events == stored
    assert all(list(event) == list(LOG_FIELDS) for event in events)


def test_an_export_round_trips_into_another_service_and_a_second_import_adds_nothing(
        stored: list[dict[str, Any]], backend: Backend, tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    with backend.client() as client:
        client.export("csv", path, source=SOURCE)
    other = FakeAuditServer()
    with Client("rw-key", "http://other.test", transport=httpx.MockTransport(other.handler)) as target:
        target.publish(read_export(path))
        target.publish(read_export(path))
        copied = list(target.iter_audit_logs())
    assert copied == stored
    assert Counter(log["event_uuid"] for log in copied) == Counter(log["event_uuid"] for log in stored)


def test_a_large_json_export_is_read_incrementally() -> None:
    logs = [{"event_uuid": str(n), "url": "/" + "x" * 1000, "client_ip": "10.0.0.1"} for n in range(300)]
    data = json.dumps({"logs": logs}, indent=1).encode()

    class Trickle(io.RawIOBase):
        """Hands out the document 7 bytes at a time and counts how far it was read."""

        def __init__(self) -> None:
            self.pos = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            chunk = data[self.pos: self.pos + 7]
            buffer[: len(chunk)] = chunk
            self.pos += len(chunk)
            return len(chunk)

    source = Trickle()
    events = read_export(source, "json")  # type: ignore[arg-type]
    first = next(events)
    assert first["event_uuid"] == "0"
    assert source.pos < len(data) // 2
    assert [e["event_uuid"] for e in [first, *events]] == [str(n) for n in range(300)]


def test_integrity_columns_are_left_out() -> None:
    line = json.dumps({"event_uuid": "u", "url": "/", "client_ip": "10.0.0.1", "seq": 4, "hash": "ab"})
    assert list(read_export(io.BytesIO(line.encode() + b"\n"), "ndjson")) == [
        {"client_ip": "10.0.0.1", "event_uuid": "u", "url": "/"}
    ]


@pytest.mark.parametrize(("name", "head", "fmt"), [
    ("a.json", b"", "json"), ("a.jsonl", b"", "ndjson"), ("a.ndjson", b"", "ndjson"), ("a.csv", b"", "csv"),
    ("a.txt", b' {\n "logs": [', "json"), ("a.txt", b'{"event_uuid": "x"}', "ndjson"), ("a", b"action,", "csv"),
])
def test_the_format_is_detected(name: str, head: bytes, fmt: str) -> None:
    assert detect_format(name, head) == fmt


@pytest.mark.parametrize(("fmt", "data", "message"), [
    ("ndjson", b'{"url": "/"}\n{oops\n', "line 2"),
    ("json", b'{"logs": [{"url": "/"}, {"url": ', "after 1 logs|not valid JSON"),
    ("json", b'[{"url": "/"}]', "expected"),
    ("csv", b"action,client_ip,nonsense\n", "unknown columns"),
    ("csv", b"action,is_support_user\nx,maybe\n", "row 2: is_support_user"),
])
def test_a_broken_file_says_where(fmt: str, data: bytes, message: str) -> None:
    with pytest.raises(ExportFileError, match=message):
        list(read_export(io.BytesIO(data), fmt))  # type: ignore[arg-type]


def test_csv_tells_a_quoted_empty_cell_from_null_and_skips_blank_lines() -> None:
    data = '\ufeffaction,log_entry,referer\r\nx,"",\r\n\r\n"y\nz",,""\r\n'.encode()
    assert list(read_export(io.BytesIO(data), "csv")) == [
        {"action": "x", "log_entry": "", "referer": None},
        {"action": "y\nz", "log_entry": None, "referer": ""},
    ]


def test_records_keep_every_field_and_a_bare_array_is_taken_when_asked() -> None:
    data = b'[{"url": "/", "seq": 4, "hash": "ab", "extra": 1}]'
    assert list(iter_records(io.BytesIO(data), "json", bare_array=True)) == [
        {"url": "/", "seq": 4, "hash": "ab", "extra": 1}
    ]
    assert list(iter_records(io.BytesIO(b"seq,action\n7,x\n"), "csv")) == [{"seq": 7, "action": "x"}]
