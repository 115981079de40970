"""One seq range of an organization's chain, checked on its own: the parallel half of `auditkeep verify`.

An event's hash needs only its own stored prev_hash, so a range checks without the events before it.
ingest/verification.py starts `python -m auditkeep.ingest.segments` once per CPU, writes each its task
as JSON on stdin and reads the result as JSON from stdout, then checks the links between the ranges and
joins their Merkle spans (integrity/merkle.py `MerkleSpan`).

Imports stay light (sqlite3 or psycopg, orjson, hashlib, integrity.merkle). A multiprocessing worker
spawned from the `auditkeep` script re-ran the script first and so imported the CLI, SQLAlchemy and
pydantic, ~0.5 CPU s per worker before its first row (issue #3, docs/benchmarks.md). The reference
verifier is imported only when an event leaves the fast path.
"""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
import sys
from bisect import bisect_right
from collections.abc import Generator, Iterable, Sequence
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

import orjson

from auditkeep.integrity.canonical import ERASED_VALUES, PERSONAL_FIELDS, SALT_BYTES, is_canonical
from auditkeep.integrity.merkle import MerkleSpan

_sha256 = hashlib.sha256
# Leaves handed to the Merkle span at a time: its level-by-level build keeps every node of a batch.
_SPAN_BATCH = 8192
_HEX = frozenset("0123456789abcdef")


class _Collector:
    """What a range reports besides its verdict: chain hashes at checkpoint sizes and the Merkle span."""

    def __init__(self, task: dict[str, Any]) -> None:
        self.sizes = sorted(task["sizes"])
        self.wanted = frozenset(self.sizes)
        self.span = MerkleSpan(task["start"] - 1) if task["merkle"] else None
        self.heads: dict[int, str] = {}  # chain hash at each checkpoint size
        self.cuts: dict[int, list[bytes]] = {}  # span hashes up to each checkpoint size
        self.leaves: list[bytes] = []  # leaf hashes not yet in the span

    def flush(self) -> None:
        span, leaves, sizes = self.span, self.leaves, self.sizes
        if span is not None and leaves:
            inside = sizes[bisect_right(sizes, span.end) : bisect_right(sizes, span.end + len(leaves))]
            self.cuts.update(span.extend(leaves, inside))
        leaves.clear()

    def result(self) -> dict[str, Any]:
        self.flush()
        span = self.span
        return {
            "heads": {str(size): digest for size, digest in self.heads.items()},
            "span": [] if span is None else [digest.hex() for digest in span.hashes],
            "cuts": {str(size): [digest.hex() for digest in hashes] for size, hashes in self.cuts.items()},
        }


def check(task: dict[str, Any], rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """Check the raw rows of seq task["start"]..task["end"] (`storage.integrity.chain_rows_sql`).

    The result (JSON-ready): `events` that verified from `start`; `first_seq` and `first_prev` of the
    first stored row (the parent checks that link); `broken` as [seq, kind, reason] or None; the chain
    hash at each checkpoint size in the range (`heads`) and of the last verified event (`last_hash`);
    with task["merkle"], the `MerkleSpan` hashes of the verified events (`span`) and of the range's
    prefix up to each checkpoint size in it (`cuts`).
    """
    names: tuple[str, ...] = tuple(task["names"])  # the canonical form's members: LOG_FIELDS, then seq
    start: int = task["start"]
    found = _Collector(task)
    stream = iter(rows)
    first = next(stream, None)
    if first is None:
        return {"events": 0, "first_seq": None, "first_prev": None, "broken": None, "last_hash": None,
                **found.result()}
    expected, prev_hex, declined = _fast(names, itertools.chain([first], stream), start, found)
    broken = None
    if declined is not None:
        expected, prev_hex, broken = _reference(names, itertools.chain([declined], stream), expected, prev_hex,
                                                found)
    return {"events": expected - start, "first_seq": first[len(names) - 1], "first_prev": first[len(names)],
            "broken": broken, "last_hash": prev_hex if expected > start else None, **found.result()}


def _fast(
    names: tuple[str, ...], rows: Iterable[Sequence[Any]], expected: int, found: _Collector
) -> tuple[int, str | None, Sequence[Any] | None]:
    """The hot loop: (next seq, last verified hash, the row it declined or None).

    The canonical form comes straight from the row (orjson, sorted keys): exactly what
    integrity.canonical's fast path does for plain values, minus its per-key checks (the keys here are
    fixed ASCII names). The first row's prev_hash is taken as given (the parent checks the link). At
    the first event that is not plain or does not verify, the loop stops and `_reference` takes over.
    """
    sha, dumps, fragment = _sha256, orjson.dumps, orjson.Fragment
    options = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER  # sorted keys; no integer JCS would refuse
    at_prev = len(names)  # the row continues with prev_hash, hash
    wanted, heads, leaves, flush = found.wanted, found.heads, found.leaves, found.flush
    prev, prev_hex = b"", None
    for row in rows:
        if not prev:  # the range's first row
            prev = _hash_bytes(row[at_prev])
            if not prev:  # malformed: the reference verifier names it
                return expected, None, row
            prev_hex = row[at_prev]
        fields = dict(zip(names, row, strict=False))  # the row also holds prev_hash, hash, salt, commitment
        if fields["seq"] != expected or row[at_prev] != prev_hex or not _plain(fields, fragment):
            return expected, prev_hex, row
        try:
            salt, commitment = row[at_prev + 2], row[at_prev + 3]
            if salt is not None or commitment is not None:  # canonical form version 2
                personal = {name: fields.pop(name) for name in PERSONAL_FIELDS}
                if commitment is None and type(salt) is str and len(salt) == 2 * SALT_BYTES and (
                        _HEX.issuperset(salt)):
                    commitment = sha(bytes.fromhex(salt) + dumps(personal, option=options)).hexdigest()
                elif not (salt is None and _erased(personal, commitment)):
                    return expected, prev_hex, row  # malformed: the reference verifier names it
                fields["personal"], fields["v"] = commitment, 2
            canonical = dumps(fields, option=options)
        except (TypeError, orjson.JSONEncodeError):  # bytes; integers beyond ±(2**53 - 1)
            return expected, prev_hex, row
        digest = sha(prev + canonical).digest()
        digest_hex = digest.hex()
        if digest_hex != row[at_prev + 1]:
            return expected, prev_hex, row
        leaves.append(sha(b"\x00" + digest).digest())
        if expected in wanted:
            heads[expected] = digest_hex
        prev, prev_hex = digest, digest_hex
        expected += 1
        if len(leaves) == _SPAN_BATCH:
            flush()
    return expected, prev_hex, None


def _reference(
    names: tuple[str, ...], rows: Iterable[Sequence[Any]], expected: int, prev_hex: str | None,
    found: _Collector,
) -> tuple[int, str | None, list[Any] | None]:
    """The rest of the range through the reference verifier: (next seq, last hash, break or None)."""
    from auditkeep.integrity.verify import ChainVerifier
    from auditkeep.storage.events import row_to_log

    fields = len(names) - 1
    verifier = ChainVerifier(start_seq=expected, prev_hash=prev_hex, frontier=None)
    for row in rows:
        event = row_to_log(row[:fields], payload_fragment=True)
        event["seq"], event["prev_hash"], event["hash"] = row[fields], row[fields + 1], row[fields + 2]
        event["personal_salt"], event["personal_commitment"] = row[fields + 3], row[fields + 4]
        if verifier.feed(event) is not None:
            break
        found.leaves.append(_sha256(b"\x00" + bytes.fromhex(event["hash"])).digest())
        if expected in found.wanted:
            found.heads[expected] = event["hash"]
        prev_hex = event["hash"]
        expected += 1
    broken = verifier.finish().broken
    return expected, prev_hex, None if broken is None else [broken.seq, broken.kind.value, broken.reason]


def _erased(personal: dict[str, Any], commitment: object) -> bool:
    """An erased event's personal fields and its commitment, as integrity.canonical.commitment_of takes them."""
    return (type(commitment) is str and len(commitment) == 64 and _HEX.issuperset(commitment)
            and all(personal[name] == value and type(personal[name]) is type(value)
                    for name, value in ERASED_VALUES.items()))


def _hash_bytes(value: object) -> bytes:
    """32 bytes from 64 lowercase hex digits; b"" for anything else."""
    if type(value) is not str or len(value) != 64 or value != value.lower():
        return b""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return b""
    return raw if len(raw) == 32 else b""


def _plain(fields: dict[str, Any], fragment: type) -> bool:
    """Normalize a row's values in place as the API returns them; False if the fast path cannot take it.

    The fast path must produce exactly the JCS bytes, or a hash computed over orjson's bytes instead
    (by whoever rewrote the row) would pass here and fail everywhere else. orjson and JCS differ on
    floats (1.0 is "1" in JCS) and on integers beyond ±(2**53 - 1) (JCS refuses them; the dumps below
    uses OPT_STRICT_INTEGER). A float can only be stored, on SQLite, in the columns without TEXT
    affinity: those four are checked here.
    """
    ts = fields["timestamp"]
    if type(ts) is not str:
        if not isinstance(ts, datetime):
            return False
        fields["timestamp"] = api_timestamp(ts)  # PostgreSQL's timestamptz
    support = fields["is_support_user"]
    if type(support) is int:  # SQLite stores booleans as 0/1
        if support not in (0, 1):
            return False
        fields["is_support_user"] = bool(support)
    payload = fields["payload"]
    if type(payload) is str:
        if not is_canonical(payload):
            return False  # hashed as its value by the reference walk (storage.events.row_to_log)
        fields["payload"] = fragment(payload)
    elif type(payload) is float:
        return False
    return type(support) is not float and type(fields["object_id"]) is not float and (
        type(fields["user_id"]) is not float)


def api_timestamp(value: datetime) -> str:
    """`storage.types.format_timestamp`, repeated here because importing auditkeep.storage imports
    SQLAlchemy (~0.3 CPU s a worker); tests/integrity_db/test_parallel.py checks that the two agree."""
    value = value.astimezone(UTC)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}Z"
    )


def sqlite_rows(task: dict[str, Any]) -> Generator[Sequence[Any], None, None]:
    """The range's rows through a plain sqlite3 connection in one read transaction (~0.2 CPU s per 200,000
    rows less than through SQLAlchemy's result layer)."""
    conn = sqlite3.connect(task["target"], isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(task['busy_timeout_ms'])}")
        conn.execute("PRAGMA query_only = ON")
        conn.execute("BEGIN")
        yield from conn.execute(task["sql"], (task["org_id"], task["start"] - 1, task["end"]))
    finally:
        conn.close()


def postgres_rows(task: dict[str, Any]) -> Generator[Sequence[Any], None, None]:
    """The range's rows through a plain psycopg connection, streamed by a server-side cursor (psycopg alone
    starts in ~0.1 s; through auditkeep's storage layer a worker first imported SQLAlchemy and pydantic)."""
    import psycopg

    with psycopg.connect(task["target"]) as conn:
        conn.read_only = True
        with conn.cursor(name="auditkeep_verify_range") as cursor:
            cursor.itersize = 5000
            cursor.execute(task["sql"], (task["org_id"], task["start"] - 1, task["end"]))
            yield from cursor


def main() -> None:
    """Read one task from stdin, write its result to stdout."""
    task = orjson.loads(sys.stdin.buffer.read())
    rows = sqlite_rows(task) if task["dialect"] == "sqlite" else postgres_rows(task)
    with closing(rows):
        result = check(task, rows)
    sys.stdout.buffer.write(orjson.dumps(result))


if __name__ == "__main__":
    main()
