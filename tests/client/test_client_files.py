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


class _Counting(io.RawIOBase):
    """A file that counts how many of its bytes were read."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self.data[self.pos: self.pos + len(buffer)]
        buffer[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


@pytest.mark.parametrize("name", ["export.json", "export"])
def test_json_after_a_byte_order_mark_and_ndjson_saved_as_json_are_read(name: str) -> None:
    logs = [{"url": "/a", "seq": 1}, {"url": "/b", "seq": 2}]
    for data in (
        b"\xef\xbb\xbf" + json.dumps({"logs": logs}, indent=2).encode(),
        b"\xef\xbb\xbf\n" + json.dumps(logs).encode(),
        b"\xef\xbb\xbf" + b"\n\n".join(json.dumps(log).encode() for log in logs) + b"\r\n",
    ):
        fmt = detect_format(name, data[:4096])
        assert list(iter_records(io.BytesIO(data), fmt, bare_array=True)) == logs, data[:20]


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
@pytest.mark.parametrize("data", [b"", b"\n \r\n", b"\xef\xbb\xbf"])
def test_an_empty_file_holds_no_records(fmt: str, data: bytes) -> None:
    assert list(iter_records(io.BytesIO(data), fmt, bare_array=True)) == []  # type: ignore[arg-type]


def test_a_log_longer_than_the_read_buffer_is_decoded() -> None:
    logs = [{"url": "/", "payload": {"blob": "é" * 300_000, "n": [1.5, -0.0, 1e21]}}, {"url": "/2"}]
    data = json.dumps({"logs": logs}, ensure_ascii=False).encode()
    assert list(iter_records(io.BytesIO(data), "json")) == logs


def test_a_broken_log_is_reported_without_reading_the_rest_of_the_file() -> None:
    good = json.dumps({"url": "/" + "x" * 500}).encode()
    data = b'{"logs": [' + b",".join([good] * 10 + [b'{"url": "/", oops}'] + [good] * 20_000) + b"]}"
    source = _Counting(data)
    with pytest.raises(ExportFileError, match=r"^log 10: not valid JSON \(Expecting property name"):
        list(iter_records(io.BufferedReader(source), "json"))
    assert source.pos < 1 << 20 < len(data)


@pytest.mark.parametrize(("fmt", "data", "message"), [
    ("json", b'{"logs": [{"n": NaN}]}', r"log 0: not valid JSON \(NaN is not a JSON value\)"),
    ("ndjson", b'{"n": 1}\n{"n": -Infinity}\n', r"line 2: not JSON \(-Infinity is not a JSON value\)"),
    ("json", b'{"logs": [{"url": "\xff"}]}', r"near byte 20: not UTF-8 text"),
    ("ndjson", b'{"url": "\xff"}\n', r"line 1: not JSON"),
    ("csv", b"url\n\xff\n", r"line 2: not UTF-8 text"),
    ("json", b'{"logs": [{"url": "/"}, 3]}', r"log 1: not a JSON object"),
    ("json", b'{"logs": 3}', r'expected \{"logs": \[ or \['),
])
def test_values_and_bytes_that_are_not_json_are_refused(fmt: str, data: bytes, message: str) -> None:
    with pytest.raises(ExportFileError, match=message):
        list(iter_records(io.BytesIO(data), fmt, bare_array=True))  # type: ignore[arg-type]
