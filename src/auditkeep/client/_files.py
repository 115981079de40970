"""Reading export files back as events, in constant memory (for `auditkeep ingest` and the like)."""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from auditkeep.client._errors import ExportFileError
from auditkeep.client._export import ExportFormat
from auditkeep.schemas.audit_logs import LOG_FIELDS

__all__ = ["detect_format", "read_export"]

_CHUNK = 1 << 16
_JSON_START = re.compile(r'\s*\{\s*"logs"\s*:\s*\[')
_INTEGERS = frozenset({"object_id", "user_id"})
_SUFFIXES: dict[str, ExportFormat] = {".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson", ".csv": "csv"}


def detect_format(path: str | os.PathLike[str], head: bytes = b"") -> ExportFormat:
    """The format of an export file: from its suffix, else from its first bytes."""
    suffix = Path(path).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    text = head.decode("utf-8", "replace")
    if _JSON_START.match(text):
        return "json"
    return "ndjson" if text.lstrip().startswith("{") else "csv"


def _only_log_fields(log: dict[str, Any]) -> dict[str, Any]:
    # An export with include=integrity also has seq, prev_hash and hash; they are the service's to make.
    return {name: log[name] for name in LOG_FIELDS if name in log}


def read_export(source: str | os.PathLike[str] | IO[bytes],
                fmt: ExportFormat | None = None) -> Iterator[dict[str, Any]]:
    """The events in an export file (`json`, `ndjson` or `csv`, as `export` and the API write them),
    one at a time, ready for `publish` (their event_uuids kept, so importing twice stores them once).

    Example:
        >>> with Client() as client:
        ...     batch = []
        ...     for event in read_export("may.ndjson"):
        ...         batch.append(event)
        ...         if len(batch) == 1000:
        ...             client.publish(batch)
        ...             batch = []
        ...     client.publish(batch)
    """
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as file:
            yield from _read(file, fmt or detect_format(source, file.peek(256)[:256]))
        return
    yield from _read(source, fmt or "ndjson")


def _read(file: IO[bytes], fmt: ExportFormat) -> Iterator[dict[str, Any]]:
    if fmt == "ndjson":
        yield from _read_ndjson(file)
    elif fmt == "json":
        yield from _read_json(file)
    elif fmt == "csv":
        yield from _read_csv(file)
    else:
        raise ValueError(f"format must be json, ndjson or csv, not {fmt!r}")


def _read_ndjson(file: IO[bytes]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(file, 1):
        if not line.strip():
            continue
        try:
            log = json.loads(line)
        except ValueError as exc:
            raise ExportFileError(f"line {number}: not JSON ({exc})") from None
        if not isinstance(log, dict):
            raise ExportFileError(f"line {number}: not a JSON object")
        yield _only_log_fields(log)


def _read_json(file: IO[bytes]) -> Iterator[dict[str, Any]]:
    # `{"logs": [...]}` may be one line of gigabytes: decode the array's objects one by one from a
    # rolling buffer instead of loading the whole document.
    decoder = json.JSONDecoder()
    text_stream = codecs.getincrementaldecoder("utf-8")()
    buffer = ""
    done = False

    def more() -> bool:
        nonlocal buffer, done
        if done:
            return False
        chunk = file.read(_CHUNK)
        if not chunk:
            done = True
            buffer += text_stream.decode(b"", final=True)
            return False
        buffer += text_stream.decode(chunk)
        return True

    while not (start := _JSON_START.match(buffer)):
        if not more() or len(buffer) > _CHUNK * 4:
            raise ExportFileError('not a JSON export: expected {"logs": [')
    pos, count = start.end(), 0
    while True:
        # Skip separators; stop at the closing bracket.
        while True:
            while pos < len(buffer) and buffer[pos] in " \t\r\n,":
                pos += 1
            if pos < len(buffer) or not more():
                break
        if pos >= len(buffer):
            raise ExportFileError(f"the logs array ends early (after {count} logs)")
        if buffer[pos] == "]":
            return
        try:
            log, end = decoder.raw_decode(buffer, pos)
        except ValueError:
            buffer, pos = buffer[pos:], 0
            if not more():
                raise ExportFileError(f"log {count}: not valid JSON") from None
            continue
        if not isinstance(log, dict):
            raise ExportFileError(f"log {count}: not a JSON object")
        count += 1
        yield _only_log_fields(log)
        pos = end
        if pos > _CHUNK:
            buffer, pos = buffer[pos:], 0


def _cell(name: str, value: str, row: int) -> Any:
    # The CSV contract: null as an empty cell, booleans true/false, payload as JSON text.
    if value == "":
        return None
    try:
        if name in _INTEGERS:
            return int(value)
        if name == "is_support_user":
            return {"true": True, "false": False}[value]
        if name == "payload":
            return json.loads(value)
    except (ValueError, KeyError):
        raise ExportFileError(f"row {row}: {name} is not a valid value: {value[:80]!r}") from None
    return value


def _read_csv(file: IO[bytes]) -> Iterator[dict[str, Any]]:
    text = io.TextIOWrapper(file, encoding="utf-8", newline="")
    try:
        reader = csv.reader(text)
        header = next(reader, None)
        if header is None:
            return
        unknown = set(header) - set(LOG_FIELDS) - {"seq", "prev_hash", "hash"}
        if unknown:
            raise ExportFileError(f"not an audit log CSV: unknown columns {sorted(unknown)}")
        for number, row in enumerate(reader, 2):
            if len(row) != len(header):
                raise ExportFileError(f"row {number}: {len(row)} cells for {len(header)} columns")
            yield {name: _cell(name, value, number) for name, value in zip(header, row, strict=True)
                   if name in LOG_FIELDS}
    finally:
        text.detach()  # the caller owns (and closes) the binary file
