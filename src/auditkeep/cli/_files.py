"""Reading audit log exports back (for `auditkeep ingest`): JSON `{"logs": [...]}` or `[...]`, NDJSON, CSV.

Every reader streams, so a file of any size is read in constant memory:
- NDJSON: one log a line.
- JSON: the array is decoded one object at a time with `json.JSONDecoder.raw_decode` over a sliding
  buffer (C speed), never the whole document at once.
- CSV as the service writes it (api/log_responses.py): a header row naming the fields; an unquoted empty
  cell is null while `""` is the empty string, which Python's csv module cannot tell apart, so records
  are split here (a record ends at a newline outside quotes) and cells parsed with one regex.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

FileFormat = Literal["json", "ndjson", "csv"]

_CHUNK = 1 << 20
_CELL = re.compile(r'(?:"((?:[^"]|"")*)"|([^,"\r\n]*))(,|\r?\n|$)', re.S)
_INT_FIELDS = frozenset({"object_id", "user_id", "seq"})


class ExportFileError(ValueError):
    """The file is not an export this reader understands; says where."""


def sniff_format(path: Path) -> FileFormat:
    """By extension (.json, .ndjson/.jsonl, .csv), else by the first bytes."""
    suffix = path.suffix.lower()
    if suffix in {".ndjson", ".jsonl"}:
        return "ndjson"
    if suffix == ".csv":
        return "csv"
    with open(path, "rb") as file:
        head = file.read(4096).lstrip()
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{"):
        # `{"logs": [` is a JSON export; an object per line is NDJSON.
        return "json" if re.match(rb'\{\s*"logs"\s*:', head) else "ndjson"
    return "csv"


def iter_logs(path: Path, fmt: FileFormat | None = None) -> Iterator[dict[str, Any]]:
    """The logs in an export file, in file order."""
    with open(path, "rb") as file:
        yield from iter_logs_from(file, fmt or sniff_format(path))


def iter_logs_from(file: IO[bytes], fmt: FileFormat) -> Iterator[dict[str, Any]]:
    """The logs in an open binary export file of format `fmt`, in file order."""
    if fmt == "ndjson":
        yield from _ndjson(file)
    elif fmt == "json":
        yield from _json(file)
    else:
        yield from _csv(file)


def _ndjson(file: IO[bytes]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(file, 1):
        if not line.strip():
            continue
        try:
            log = json.loads(line)
        except ValueError as exc:
            raise ExportFileError(f"line {number}: not JSON ({exc})") from None
        if not isinstance(log, dict):
            raise ExportFileError(f"line {number}: not a JSON object")
        yield log


class _Text:
    """A sliding window over a UTF-8 stream: `text[pos:]` is what is not consumed yet."""

    def __init__(self, file: IO[bytes]) -> None:
        # Whole characters only; not closed here, the caller owns `file`.
        self._reader = io.TextIOWrapper(file, encoding="utf-8", newline="")
        self.text = ""
        self.pos = 0
        self.eof = False

    def more(self) -> bool:
        """Read another chunk (dropping what is consumed); False at the end of the file."""
        if self.eof:
            return False
        chunk = self._reader.read(_CHUNK)
        self.text = self.text[self.pos :] + chunk
        self.pos = 0
        self.eof = not chunk
        return bool(chunk)

    def close(self) -> None:
        """Let go of the file without closing it."""
        self._reader.detach()

    def skip(self, chars: str) -> str | None:
        """Skip `chars`; the next character, or None at the end of the file."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in chars:
                self.pos += 1
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return None


_OPENING = re.compile(r'\s*(?:\[|\{\s*"logs"\s*:\s*\[)')


def _json(file: IO[bytes]) -> Iterator[dict[str, Any]]:
    decoder = json.JSONDecoder()
    window = _Text(file)
    while len(window.text) < 64 and window.more():
        pass
    opening = _OPENING.match(window.text)
    if opening is None:
        raise ExportFileError('a JSON export starts with {"logs": [ or with [')
    window.pos = opening.end()
    while True:
        nxt = window.skip(" \t\r\n,")
        if nxt is None:
            raise ExportFileError("the JSON export ends before its closing ]")
        if nxt == "]":
            window.close()
            return
        try:
            log, end = decoder.raw_decode(window.text, window.pos)
        except ValueError as exc:
            # Most likely the object runs past the window: read on, unless the file is over.
            if window.more():
                continue
            raise ExportFileError(f"not JSON: {exc}") from None
        if not isinstance(log, dict):
            raise ExportFileError("a log must be a JSON object")
        window.pos = end
        yield log


def _records(file: IO[bytes]) -> Iterator[tuple[int, str]]:
    """(line number, record text) with quoted newlines kept inside their record."""
    pending: list[str] = []
    quotes = 0
    start = 0
    for number, raw in enumerate(file, 1):
        line = raw.decode("utf-8")
        if not pending:
            start = number
        pending.append(line)
        quotes += line.count('"')
        if quotes % 2 == 0:
            yield start, "".join(pending)
            pending, quotes = [], 0
    if pending:
        raise ExportFileError(f"line {start}: a quoted cell never ends")


def _cells(record: str, number: int) -> list[str | None]:
    cells: list[str | None] = []
    pos = 0
    text = record.rstrip("\r\n")
    while True:
        match = _CELL.match(text, pos)
        if match is None:
            raise ExportFileError(f"line {number}: malformed CSV at column {pos + 1}")
        quoted, bare, sep = match.groups()
        if quoted is not None:
            cells.append(quoted.replace('""', '"'))
        else:
            cells.append(bare if bare else None)
        pos = match.end()
        if sep != ",":
            return cells


def _typed(name: str, value: str | None, number: int) -> Any:
    if value is None:
        return None
    try:
        if name in _INT_FIELDS:
            return int(value)
        if name == "is_support_user":
            return {"true": True, "false": False}[value]
        if name == "payload":
            return json.loads(value)
    except (ValueError, KeyError):
        raise ExportFileError(f"line {number}: {name} {value!r} is not valid") from None
    return value


def _csv(file: IO[bytes]) -> Iterator[dict[str, Any]]:
    records = _records(file)
    try:
        number, header_text = next(records)
    except StopIteration:
        return
    header = [c or "" for c in _cells(header_text.lstrip("\ufeff"), number)]
    for number, record in records:
        if not record.strip():
            continue
        cells = _cells(record, number)
        if len(cells) != len(header):
            raise ExportFileError(f"line {number}: {len(cells)} cells, the header has {len(header)}")
        yield {name: _typed(name, value, number) for name, value in zip(header, cells, strict=True)}
