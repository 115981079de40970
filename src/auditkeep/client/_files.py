"""Reading export files back as events, in constant memory (`read_export`, and `auditkeep ingest`).

Every reader streams, so a file of any size is read in constant memory. A UTF-8 byte order mark (as some
editors save) is skipped, and a file of nothing but whitespace holds no logs in every format.
- NDJSON: one log a line.
- An export made with `include=integrity` states its query first: `{"query": {...}, "logs": [...]}` in
  JSON, a first line `{"query": {...}}` in NDJSON (docs/integrity.md §6). The readers skip it unless
  asked for it (`statements=True`, as `auditkeep verify-export` does).
- JSON: the array's objects are decoded one at a time with `json.JSONDecoder.raw_decode` from a rolling
  buffer, never the whole document at once (`{"logs": [...]}` may be one line of gigabytes). A broken
  log is reported where it is, without reading the rest of the file into the buffer first.
- CSV as the service writes it (api/log_responses.py): a header row naming the fields; an unquoted empty
  cell is null while `""` is the empty string, which Python's csv module cannot tell apart, so records
  are split here (a record ends at a newline outside quotes) and cells parsed with one regex. A text
  cell the service began with one `'` (a text beginning with =, +, -, @, TAB, CR or ') loses that `'`.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from auditkeep.client._errors import ExportFileError
from auditkeep.client._export import ExportFormat
from auditkeep.schemas.audit_logs import LOG_FIELDS

__all__ = ["detect_format", "iter_records", "read_export"]

_CHUNK = 1 << 16
_HEAD = 4096  # bytes looked at to tell the format of a file without a telling suffix
_SUFFIXES: dict[str, ExportFormat] = {".ndjson": "ndjson", ".jsonl": "ndjson", ".csv": "csv"}
_LOGS_KEY = re.compile(rb'\{\s*"logs"\s*:')
_JSON_START = re.compile(r'\s*\{\s*"logs"\s*:\s*\[')
_JSON_OR_ARRAY_START = re.compile(r'\s*(?:\[|\{\s*"logs"\s*:\s*\[)')
# An include=integrity export's query statement comes first: `{"query": {...}, "logs": [` in JSON.
_QUERY_KEY = re.compile(r'\s*\{\s*"query"\s*:\s*')
_LOGS_AFTER_QUERY = re.compile(r'\s*,\s*"logs"\s*:\s*\[')
# Exports made with include=integrity also have these; they are the service's to make.
_INTEGRITY_FIELDS = ("seq", "prev_hash", "hash", "personal_salt", "personal_commitment")
_KNOWN_COLUMNS = frozenset(LOG_FIELDS) | frozenset(_INTEGRITY_FIELDS)
_INTEGERS = frozenset({"object_id", "user_id", "seq"})
_BOM = b"\xef\xbb\xbf"
# A decoding error this close to the buffer's end may only mean the buffer ends inside a value.
_NEAR_END = 8
# One log came in a POST body of at most 16 MB (CONTRACT.md), so a log still undecoded after this many
# characters is broken, not long: without a bound, an unterminated string would pull the whole file into memory.
_MAX_LOG_CHARS = 64 << 20
# What a text cell of the service's CSV may begin with after its one added ' (storage/queries.py).
_ESCAPED = frozenset("=+-@\t\r'")
_CELL = re.compile(r'(?:"((?:[^"]|"")*)"|([^,"\r\n]*))(,|\r?\n|$)', re.S)


def detect_format(path: str | os.PathLike[str], head: bytes = b"") -> ExportFormat:
    """The format of an export file: from its suffix (.ndjson/.jsonl, .csv), else from its first bytes.

    A `.json` file is looked into too, as NDJSON is often saved under that name.
    """
    suffix = Path(path).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    start = head.removeprefix(_BOM).lstrip()
    if start.startswith(b"[") or _LOGS_KEY.match(start):
        return "json"
    if (after := _after_statement(start)) is not None:
        return "json" if after.startswith(",") else "ndjson"  # `{"query": {...}, "logs"` or a line `{"query": {...}}`
    if start.startswith(b"{"):
        return "ndjson"  # an object per line
    return "json" if suffix == ".json" else "csv"


def _after_statement(start: bytes) -> str | None:
    """What follows the statement `{"query": {...}` at the start of a file, or None (no statement, or
    one longer than what was looked at)."""
    text = start.decode("utf-8", "replace")
    if (key := _QUERY_KEY.match(text)) is None:
        return None
    try:
        _, end = json.JSONDecoder().raw_decode(text, key.end())
    except json.JSONDecodeError:
        return None
    return text[end:].lstrip()


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
            yield from _only_log_fields(iter_records(file, fmt or detect_format(source, file.peek(_HEAD)[:_HEAD])))
        return
    yield from _only_log_fields(iter_records(source, fmt or "ndjson"))


def _only_log_fields(records: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    # An export with include=integrity also has seq, prev_hash and hash; they are the service's to make.
    for log in records:
        yield {name: log[name] for name in LOG_FIELDS if name in log}


def iter_records(file: IO[bytes], fmt: ExportFormat, *, bare_array: bool = False,
                 statements: bool = False) -> Iterator[dict[str, Any]]:
    """The records of an open binary export file, in file order, with every field they have (the
    integrity columns and any others). `bare_array` also takes a JSON document that is just `[...]`.
    `statements` also yields the export's query statement, `{"query": {...}}`, where the file has one.
    """
    if fmt == "ndjson":
        records = _read_ndjson(file)
        yield from records if statements else (r for r in records if not _is_statement(r))
    elif fmt == "json":
        yield from _read_json(file, _JSON_OR_ARRAY_START if bare_array else _JSON_START, statements)
    elif fmt == "csv":
        yield from _read_csv(file)
    else:
        raise ValueError(f"format must be json, ndjson or csv, not {fmt!r}")


def _is_statement(record: dict[str, Any]) -> bool:
    # A query statement has a "query" member and none of an event's (integrity/export.py, is_statement).
    return "query" in record and "seq" not in record and "hash" not in record


def _no_constant(name: str) -> Any:
    # Python's json takes NaN and Infinity, which are not JSON (RFC 8259) and which the service never writes.
    raise ValueError(f"{name} is not a JSON value")


def _read_ndjson(file: IO[bytes]) -> Iterator[dict[str, Any]]:
    for number, raw in enumerate(file, 1):
        line = raw.removeprefix(_BOM) if number == 1 else raw
        if not line.strip():
            continue
        try:
            log = json.loads(line, parse_constant=_no_constant)
        except ValueError as exc:
            raise ExportFileError(f"line {number}: not JSON ({exc})") from None
        if not isinstance(log, dict):
            raise ExportFileError(f"line {number}: not a JSON object")
        yield log


class _Text:
    """The text of a binary file decoded so far (`text`), read on demand in chunks."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.text = ""
        self.done = False
        self._read = 0  # bytes, to say where undecodable bytes are
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()

    def more(self, size: int = _CHUNK) -> bool:
        """Append up to `size` more bytes' text; False at the end of the file."""
        if self.done:
            return False
        chunk = self.file.read(size)
        try:
            if not chunk:
                self.done = True
                self.text += self._decoder.decode(b"", final=True)
                return False
            self.text += self._decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise ExportFileError(f"near byte {self._read + exc.start + 1}: not UTF-8 text") from None
        self._read += len(chunk)
        return True


def _statement(source: _Text) -> tuple[dict[str, Any], int] | None:
    """The query statement opening a JSON export (`{"query": {...}, "logs": [`) and where the logs
    array's items begin, or None if the file does not open with one."""
    while True:
        key = _QUERY_KEY.match(source.text)
        if key is None:
            if len(source.text.lstrip()) < 16 and source.more():
                continue
            return None
        try:
            value, end = json.JSONDecoder(parse_constant=_no_constant).raw_decode(source.text, key.end())
        except json.JSONDecodeError:
            if len(source.text) > _CHUNK * 4 or not source.more():
                raise ExportFileError("not a JSON export: its query statement is not valid JSON") from None
            continue
        while not (logs := _LOGS_AFTER_QUERY.match(source.text, end)):
            if len(source.text) - end > 64 or not source.more():
                raise ExportFileError('not a JSON export: expected "logs": [ after the query statement')
        return {"query": value}, logs.end()


def _array_start(source: _Text, opening: re.Pattern[str]) -> int | None:
    """Where the logs array's items begin; None for an empty file."""
    while not (start := opening.match(source.text)):
        if not source.more() or len(source.text) > _CHUNK * 4:
            if source.done and not source.text.strip():
                return None
            expected = '{"logs": [ or [' if opening is _JSON_OR_ARRAY_START else '{"logs": ['
            raise ExportFileError(f"not a JSON export: expected {expected}")
    return start.end()


def _next_item(source: _Text, pos: int) -> int:
    """The position of the next item or closing bracket after `pos`, past separators."""
    while True:
        text = source.text
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos < len(text) or not source.more():
            return pos


def _read_json(file: IO[bytes], opening: re.Pattern[str], statements: bool = False) -> Iterator[dict[str, Any]]:
    source = _Text(file)
    stated = _statement(source)
    if stated is not None:
        if statements:
            yield stated[0]
        start: int | None = stated[1]
    else:
        start = _array_start(source, opening)
    if start is None:
        return
    decoder = json.JSONDecoder(parse_constant=_no_constant)
    pos, count = start, 0
    while True:
        pos = _next_item(source, pos)
        if pos >= len(source.text):
            raise ExportFileError(f"the logs array ends early (after {count} logs)")
        if source.text[pos] == "]":
            return
        try:
            log, end = decoder.raw_decode(source.text, pos)
        except json.JSONDecodeError as exc:
            # The object may run past the buffer: read on, doubling what is read so that a long log costs
            # linear time, unless the error lies inside what was read or the file is over.
            cut = exc.pos >= len(source.text) - _NEAR_END or exc.msg.startswith("Unterminated string")
            source.text, pos = source.text[pos:], 0
            if not cut or len(source.text) > _MAX_LOG_CHARS or not source.more(max(_CHUNK, len(source.text))):
                raise ExportFileError(f"log {count}: not valid JSON ({exc.msg})") from None
            continue
        except ValueError as exc:  # NaN or Infinity
            raise ExportFileError(f"log {count}: not valid JSON ({exc})") from None
        if not isinstance(log, dict):
            raise ExportFileError(f"log {count}: not a JSON object")
        count += 1
        yield log
        pos = end
        if pos > _CHUNK:
            source.text, pos = source.text[pos:], 0


def _csv_records(file: IO[bytes]) -> Iterator[tuple[int, str]]:
    """(line number, record text) with quoted newlines kept inside their record."""
    pending: list[str] = []
    quotes = 0
    start = 0
    for number, raw in enumerate(file, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ExportFileError(f"line {number}: not UTF-8 text") from None
        if not pending:
            start = number
        pending.append(line)
        quotes += line.count('"')
        if quotes % 2 == 0:
            yield start, "".join(pending)
            pending, quotes = [], 0
    if pending:
        raise ExportFileError(f"line {start}: a quoted cell never ends")


def _cells(record: str, row: int) -> list[str | None]:
    cells: list[str | None] = []
    pos = 0
    text = record.rstrip("\r\n")
    while True:
        match = _CELL.match(text, pos)
        if match is None:
            raise ExportFileError(f"row {row}: malformed CSV at column {pos + 1}")
        quoted, bare, sep = match.groups()
        if quoted is not None:
            cells.append(quoted.replace('""', '"'))
        else:
            cells.append(bare if bare else None)
        pos = match.end()
        if sep != ",":
            return cells


def _cell(name: str, value: str | None, row: int) -> Any:
    # The CSV contract: null as an unquoted empty cell, booleans true/false, payload as JSON text.
    if value is None:
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
    # The writer puts one ' before a text that begins with =, +, -, @, TAB, CR or ' (so no spreadsheet
    # runs it as a formula); take exactly that one off. A ' before anything else was the text's own.
    return value[1:] if value[:1] == "'" and value[1:2] in _ESCAPED else value


def _read_csv(file: IO[bytes]) -> Iterator[dict[str, Any]]:
    # Rows are counted as a spreadsheet shows them, the header being row 1; a row may span lines.
    records = _csv_records(file)
    header_text = ""
    while not header_text.strip():
        try:
            _, header_text = next(records)
        except StopIteration:
            return
        header_text = header_text.lstrip("\ufeff")
    header = [cell or "" for cell in _cells(header_text, 1)]
    unknown = set(header) - _KNOWN_COLUMNS
    if unknown:
        raise ExportFileError(f"not an audit log CSV: unknown columns {sorted(unknown)}")
    row = 1
    for _, record in records:
        if not record.strip():
            continue
        row += 1
        cells = _cells(record, row)
        if len(cells) != len(header):
            raise ExportFileError(f"row {row}: {len(cells)} cells for {len(header)} columns")
        yield {name: _cell(name, value, row) for name, value in zip(header, cells, strict=True)}
