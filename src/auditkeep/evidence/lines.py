"""Check a run of events.ndjson's lines: the part of `verify-bundle` that scales with the bundle.

`check_lines` parses each line, recomputes each event's hash and checks the (timestamp, seq) order, and
returns the chain facts (seq, prev_hash, hash) packed, the failures it found, and what the caller needs
to join runs: the first and last event's order key, and where an order failure at the run's start goes.
`verify-bundle` calls it in-process for a small bundle and, for a large one, in worker processes started
as `python -m auditkeep.evidence.lines` (evidence/workers.py), each given runs of lines in turn.

The hash is recomputed on a fast path like `auditkeep verify`'s (ingest/segments.py): orjson with sorted
keys is exactly JCS when every value is plain (no float, ASCII payload keys, integers within I-JSON's
range). Any event that is not plain, or whose hash does not match, is checked again by the reference
verifier (integrity/verify.py), which decides and names the failure, so the fast path can only be
faster, never more lenient: the same failures either way (tests/evidence/test_fast_paths.py).

Imports stay light (orjson, hashlib, integrity.canonical): a worker starts in ~0.1 s.
"""

from __future__ import annotations

import hashlib
import operator
import struct
import sys
from array import array
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from auditkeep.integrity.canonical import ERASED_VALUES, PERSONAL_FIELDS, SALT_BYTES, _safe_dict

EVENTS = "events.ndjson"
_sha256 = hashlib.sha256
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER  # sorted keys; no integer JCS would refuse
_HEX = frozenset("0123456789abcdef")
_ERASED = tuple(ERASED_VALUES.items())
_OTHER = ("action", "event_uuid", "is_support_user", "object_id", "object_type", "request_type", "source", "status",
          "timestamp", "seq")  # the members a version 2 form keeps besides `personal` and `v`
_personal, _other = operator.itemgetter(*PERSONAL_FIELDS), operator.itemgetter(*_OTHER)


@dataclass
class LinesResult:
    """What a run of lines holds: its events' chain facts in file order, and what failed."""

    seqs: array[int] = field(default_factory=lambda: array("q"))
    prevs: bytearray = field(default_factory=bytearray)
    hashes: bytearray = field(default_factory=bytearray)
    failures: list[str] = field(default_factory=list)
    statement: bool = False  # a query statement was seen (valid or not)
    first: tuple[str, int, int] | None = None  # (timestamp, seq, line number) of the first event checked
    last: tuple[str, int] | None = None  # (timestamp, seq) of the last event checked
    cut: int = 0  # where in `failures` an out-of-order failure of `first` belongs

    def to_frame(self) -> bytes:
        """The result as one frame for a worker's stdout: lengths, JSON of the rest, then the packed facts."""
        head = orjson.dumps({"failures": self.failures, "statement": self.statement, "first": self.first,
                             "last": self.last, "cut": self.cut, "count": len(self.seqs)})
        body = self.seqs.tobytes() + self.prevs + self.hashes
        return struct.pack("<QQ", len(head), len(body)) + head + body

    @classmethod
    def from_frame(cls, head: bytes, body: bytes) -> LinesResult:
        meta = orjson.loads(head)
        n = meta["count"]
        seqs = array("q")
        seqs.frombytes(body[:8 * n])
        first, last = meta["first"], meta["last"]
        return cls(seqs, bytearray(body[8 * n:40 * n]), bytearray(body[40 * n:72 * n]), meta["failures"],
                   meta["statement"], tuple(first) if first else None,
                   tuple(last) if last else None, meta["cut"])


def check_lines(data: bytes, first_number: int, names: tuple[str, ...], query: Any) -> LinesResult:
    """Check the lines of `data` (whole lines of events.ndjson, the first being line `first_number`).

    `names`: the 17 API fields (schemas.audit_logs.LOG_FIELDS); `query`: the manifest's query, which a
    statement on line 1 must equal.
    """
    out = LinesResult()
    failures = out.failures
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    loads, dumps, sha = orjson.loads, orjson.dumps, _sha256
    members = frozenset((*names, "seq"))
    seqs, prevs, hashes = out.seqs, out.prevs, out.hashes
    last: tuple[str, int] | None = None
    for number, line in enumerate(lines, start=first_number):
        try:
            event = loads(line)
        except orjson.JSONDecodeError as exc:
            if line.strip():
                failures.append(f"{EVENTS} line {number}: not valid JSON ({exc})")
            continue
        if type(event) is not dict:
            failures.append(f"{EVENTS} line {number}: not a JSON object")
            continue
        if "query" in event and "seq" not in event and "hash" not in event:  # integrity.export.is_statement
            if number != 1 or out.statement:
                failures.append(f"{EVENTS} line {number}: a query statement after the first line")
            elif event["query"] != query:
                failures.append(f"{EVENTS}: the query statement differs from the manifest's query")
            out.statement = True
            continue
        checked = _fast(event, members, dumps, sha)
        if checked is None:
            checked = _reference(event, number, failures)
            if checked is None:
                continue
        seq, prev_hash, digest = checked
        key = (str(event.get("timestamp")), seq)
        if last is None:
            out.first = (key[0], seq, number)
            out.cut = len(failures)
        elif key <= last:
            failures.append(f"seq {seq} ({EVENTS} line {number}): out of order, after seq {last[1]} "
                            "(events are in (timestamp, seq) order: a reordered event)")
        last = key
        seqs.append(seq)
        prevs += prev_hash
        hashes += digest
    out.last = last
    return out


def _hex32(value: object) -> bytes | None:
    """32 bytes from exactly 64 lowercase hex digits, else None (fromhex alone accepts capitals, spaces)."""
    if type(value) is not str or len(value) != 64:
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return raw if len(raw) == 32 and value == value.lower() else None


def _fast(event: dict[str, Any], names: frozenset[str], dumps: Any, sha: Any) -> tuple[int, bytes, bytes] | None:
    """(seq, prev_hash, hash) of a plain, well-formed event whose hash verifies; None sends it to `_reference`.

    The event dict itself becomes the canonical form's members (the chain and salt members taken out), so
    its keys must be exactly the 17 fields and seq: a renamed field hashed by a forger would pass otherwise.
    """
    event = dict(event)
    prev_hash, digest = _hex32(event.pop("prev_hash", None)), _hex32(event.pop("hash", None))
    salt, commitment = event.pop("personal_salt", None), event.pop("personal_commitment", None)
    seq = event.get("seq")
    if type(seq) is not int or seq < 1 or prev_hash is None or digest is None or event.keys() != names:
        return None
    kinds = tuple(map(type, event.values()))
    if float in kinds:
        return None  # JCS writes floats its own way
    if (dict in kinds or list in kinds) and not _safe_dict(event):
        return None  # non-ASCII keys sort differently
    try:
        if salt is not None or commitment is not None:  # canonical form version 2 (docs/integrity.md §1.2)
            personal = dict(zip(PERSONAL_FIELDS, _personal(event), strict=True))
            event = dict(zip(_OTHER, _other(event), strict=True))
            if commitment is None and type(salt) is str and len(salt) == 2 * SALT_BYTES and _HEX.issuperset(salt):
                commitment = sha(bytes.fromhex(salt) + dumps(personal, option=_OPTIONS)).hexdigest()
            elif not (salt is None and type(commitment) is str and len(commitment) == 64
                      and _HEX.issuperset(commitment)
                      and all(personal[n] == v and type(personal[n]) is type(v) for n, v in _ERASED)):
                return None
            event["personal"], event["v"] = commitment, 2
        canonical = dumps(event, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):  # integers beyond ±(2**53 - 1), other types
        return None
    if sha(prev_hash + canonical).digest() != digest:
        return None
    return seq, prev_hash, digest


def _reference(event: dict[str, Any], number: int, failures: list[str]) -> tuple[int, bytes, bytes] | None:
    """(seq, prev_hash, hash) of a well-formed event, its content hash checked by the reference verifier
    (failures named); None if malformed."""
    from auditkeep.integrity.verify import check_event, event_hash, missing_fields

    checked = check_event(event)
    if isinstance(checked, str):
        failures.append(f"{EVENTS} line {number}: {checked}")
        return None
    seq, prev_hash, digest = checked
    try:
        if event_hash(event, prev_hash) != digest:
            failures.append(f"seq {seq} ({EVENTS} line {number}): hash does not match the event's content "
                            "(a changed event)")
    except KeyError:
        failures.append(f"seq {seq} ({EVENTS} line {number}): {missing_fields(event)}")
    except (TypeError, ValueError) as exc:
        failures.append(f"seq {seq} ({EVENTS} line {number}): content has no canonical form ({exc})")
    return checked


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError("the parent closed the task stream mid-frame")
    return data


def main() -> None:
    """A worker: a JSON setup frame ({"names", "query"}), then runs of lines as (first line number, length,
    bytes) frames until a zero length; one result frame on stdout for each run, in order."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    (size,) = struct.unpack("<Q", _read_exactly(stdin, 8))
    setup = orjson.loads(_read_exactly(stdin, size))
    names, query = tuple(setup["names"]), setup["query"]
    while True:
        number, size = struct.unpack("<QQ", _read_exactly(stdin, 16))
        if not size:
            break
        stdout.write(check_lines(_read_exactly(stdin, size), number, names, query).to_frame())
        stdout.flush()


if __name__ == "__main__":
    main()
