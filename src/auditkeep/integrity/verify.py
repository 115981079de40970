"""Walk an organization's events in seq order and check the chain, the Merkle tree and any checkpoints.

This is what `auditkeep verify` and GET /api/v1/integrity/verify run over the database; the offline
export verifier (`auditkeep verify-export`) is in integrity/export.py. Both stop at nothing the
caller has not handed them: no I/O here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from auditkeep.integrity.canonical import canonical_json, commitment_of, core_fields
from auditkeep.integrity.chain import ZERO_HASH_HEX
from auditkeep.integrity.checkpoints import Checkpoint
from auditkeep.integrity.merkle import CompactRange
from auditkeep.schemas.audit_logs import LOG_FIELDS

_sha256 = hashlib.sha256
_HEX_DIGITS = frozenset("0123456789abcdef")


class BreakKind(StrEnum):
    """Why verification stopped at a seq."""

    HASH_MISMATCH = "hash_mismatch"  # the stored hash is not SHA-256(prev_hash ‖ canonical form)
    PREV_HASH_MISMATCH = "prev_hash_mismatch"  # prev_hash is not the previous event's hash
    SEQ_GAP = "seq_gap"  # a seq is missing (the break names the missing seq)
    SEQ_OUT_OF_ORDER = "seq_out_of_order"
    DUPLICATE_SEQ = "duplicate_seq"
    MALFORMED = "malformed"  # a field is missing or has the wrong type
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"  # chain head or Merkle root differs from a checkpoint
    TRUNCATED = "truncated"  # a checkpoint covers more events than there are


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first seq at which the history does not verify, and why."""

    seq: int
    kind: BreakKind
    reason: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.reason}"


@dataclass(frozen=True, slots=True)
class TreeHead:
    """The state after seq `tree_size`, as lowercase hex.

    `root_hash` is None when the walk began after purged events without their compact range, and
    `chain_head` is None when it also began without their last hash and has seen no event yet.
    """

    tree_size: int
    root_hash: str | None
    chain_head: str | None


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The outcome of a walk: `broken` is None when every event and checkpoint verified."""

    broken: ChainBreak | None
    events: int  # events that verified
    head: TreeHead  # after the last event that verified

    @property
    def ok(self) -> bool:
        return self.broken is None


def event_hash(event: Mapping[str, Any], prev_hash: bytes) -> bytes:
    """SHA-256(prev_hash ‖ canonical bytes of the event), version 1 or 2 (docs/integrity.md §1): the 17
    fields plus seq, or for an event with `personal_salt` or `personal_commitment` its 9 other fields, the
    personal commitment, `v` and seq. KeyError if a field is missing; ValueError if the version 2 members
    are malformed (or an erased event shows personal values)."""
    fields = {name: event[name] for name in LOG_FIELDS}
    commitment = commitment_of(event)
    if commitment is not None:
        fields = core_fields(fields, commitment)
    fields["seq"] = event["seq"]
    return _sha256(prev_hash + canonical_json(fields)).digest()


def check_event(event: Mapping[str, Any]) -> tuple[int, bytes, bytes] | str:
    """An event's (seq, prev_hash, hash) as bytes, or why they are malformed (fields: `missing_fields`)."""
    seq = event.get("seq")
    if type(seq) is not int or seq < 1:
        return "seq must be a positive integer"
    try:
        prev_hash = _hash_from_hex(event.get("prev_hash"))
        digest = _hash_from_hex(event.get("hash"))
    except ValueError as exc:
        return str(exc)
    return seq, prev_hash, digest


def missing_fields(event: Mapping[str, Any]) -> str:
    """Why `event_hash` raised KeyError for this event."""
    return f"missing field(s) {', '.join(name for name in LOG_FIELDS if name not in event)}"


def _hash_from_hex(value: object) -> bytes:
    if not is_hash_hex(value):
        raise ValueError("prev_hash and hash must be 64 lowercase hex digits")
    assert isinstance(value, str)
    return bytes.fromhex(value)


def is_hash_hex(value: object) -> bool:
    """64 lowercase hex digits (how hashes are stored and travel)."""
    return isinstance(value, str) and len(value) == 64 and _HEX_DIGITS.issuperset(value)


def sequence_break(seq: int, expected: int) -> ChainBreak:
    """Seq `seq` stored where `expected` was due: a gap, a duplicate or a step back."""
    if seq > expected:
        missing = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
        return ChainBreak(expected, BreakKind.SEQ_GAP, f"seq {missing} missing (next stored is {seq})")
    if seq == expected - 1:
        return ChainBreak(seq, BreakKind.DUPLICATE_SEQ, f"seq {seq} appears twice")
    return ChainBreak(seq, BreakKind.SEQ_OUT_OF_ORDER, f"seq {seq} comes after seq {expected - 1}")


class ChainVerifier:
    """Checks events one at a time, in seq order, keeping the chain head and Merkle compact range.

    Starts at seq 1 with the zero hash and an empty tree; after a retention purge, start at the first
    stored seq with the stored `prev_hash` (None: trust the first event's own) and the compact range
    for the purged prefix (None: no Merkle root can be computed). A checkpoint is compared when the
    walk reaches its tree size; one beyond the last event reports truncation from `finish`.
    """

    def __init__(
        self,
        *,
        start_seq: int = 1,
        prev_hash: str | None = ZERO_HASH_HEX,
        frontier: CompactRange | None = None,
        checkpoints: Iterable[Checkpoint] = (),
    ) -> None:
        if prev_hash is not None and not is_hash_hex(prev_hash):
            raise ValueError("prev_hash must be 64 lowercase hex digits")
        if frontier is None and start_seq == 1:
            frontier = CompactRange()
        if frontier is not None and frontier.size != start_seq - 1:
            raise ValueError(f"frontier covers {frontier.size} leaves, the walk starts at seq {start_seq}")
        self._next_seq = start_seq
        self._prev = bytes(32) if prev_hash is None else bytes.fromhex(prev_hash)
        self._prev_hex = prev_hash
        self._frontier = frontier
        self._events = 0
        self._pending: dict[int, list[Checkpoint]] = {}
        for checkpoint in checkpoints:
            self._pending.setdefault(checkpoint.tree_size, []).append(checkpoint)
        self.broken: ChainBreak | None = None
        # Checkpoints for sizes before the walk's start: only the one at its very start is checkable.
        self._check_checkpoints(start_seq - 1)
        for size in [size for size in self._pending if size < start_seq - 1]:
            del self._pending[size]

    @property
    def head(self) -> TreeHead:
        """Root and chain head after the last event that verified."""
        root = None if self._frontier is None else self._frontier.root().hex()
        return TreeHead(self._next_seq - 1, root, self._prev_hex)

    def feed(self, event: Mapping[str, Any]) -> ChainBreak | None:
        """Check the next event; the first break is kept in `broken` and every later call returns it."""
        if self.broken is not None:
            return self.broken
        self.broken = self._feed(event)
        if self.broken is None:
            self._check_checkpoints(self._next_seq - 1)
        return self.broken

    def _feed(self, event: Mapping[str, Any]) -> ChainBreak | None:
        # The hot loop of `auditkeep verify` (1,000,000 events within 10 s, issue #3): hex strings are
        # compared as stored, and only a mismatch pays for finding out whether the value is malformed.
        expected = self._next_seq
        seq = event.get("seq")
        if type(seq) is not int or seq < 1:
            return ChainBreak(expected, BreakKind.MALFORMED, "seq must be a positive integer")
        if seq != expected:
            return sequence_break(seq, expected)
        prev_hex = event.get("prev_hash")
        if prev_hex != self._prev_hex:
            if not is_hash_hex(prev_hex):
                return ChainBreak(expected, BreakKind.MALFORMED, "prev_hash must be 64 lowercase hex digits")
            if self._prev_hex is not None:
                what = "64 zeros" if expected == 1 else f"the hash of seq {expected - 1}"
                return ChainBreak(expected, BreakKind.PREV_HASH_MISMATCH, f"prev_hash is not {what}")
            assert isinstance(prev_hex, str)  # first event after a purge with no known predecessor
            self._prev = bytes.fromhex(prev_hex)
        try:
            digest = event_hash(event, self._prev)
        except KeyError:
            return ChainBreak(expected, BreakKind.MALFORMED, missing_fields(event))
        except (TypeError, ValueError) as exc:  # rfc8785's CanonicalizationError is a ValueError
            # Only a row written behind the service's back holds such a value (ingest refuses them).
            return ChainBreak(expected, BreakKind.MALFORMED, f"a field has no canonical JSON form ({exc})")
        digest_hex = digest.hex()
        stored = event.get("hash")
        if digest_hex != stored:
            if not is_hash_hex(stored):
                return ChainBreak(expected, BreakKind.MALFORMED, "hash must be 64 lowercase hex digits")
            return ChainBreak(expected, BreakKind.HASH_MISMATCH, "hash does not match the event's content")
        if self._frontier is not None:
            self._frontier.append(_sha256(b"\x00" + digest).digest())
        self._prev = digest
        self._prev_hex = digest_hex
        self._next_seq = expected + 1
        self._events += 1
        return None

    def _check_checkpoints(self, size: int) -> None:
        for checkpoint in self._pending.pop(size, ()):
            if self.broken is not None:
                return
            head = self.head
            if head.chain_head is not None and checkpoint.chain_head != head.chain_head:
                self.broken = ChainBreak(
                    size,
                    BreakKind.CHECKPOINT_MISMATCH,
                    f"hash of seq {size} differs from the chain head of the checkpoint "
                    f"issued {checkpoint.issued_at}",
                )
            elif head.root_hash is not None and checkpoint.root_hash != head.root_hash:
                self.broken = ChainBreak(
                    size,
                    BreakKind.CHECKPOINT_MISMATCH,
                    f"Merkle root at tree size {size} differs from the checkpoint "
                    f"issued {checkpoint.issued_at}",
                )

    def finish(self) -> ChainReport:
        """The report; checkpoints beyond the last verified event mean the log was truncated."""
        if self.broken is None and self._pending:
            size = min(self._pending)
            last = self._next_seq - 1
            self.broken = ChainBreak(
                last + 1,
                BreakKind.TRUNCATED,
                f"the log ends at seq {last} but a checkpoint covers {size} events",
            )
        return ChainReport(self.broken, self._events, self.head)


def verify_chain(
    events: Iterable[Mapping[str, Any]],
    *,
    start_seq: int = 1,
    prev_hash: str | None = ZERO_HASH_HEX,
    frontier: CompactRange | None = None,
    checkpoints: Iterable[Checkpoint] = (),
) -> ChainReport:
    """Verify one organization's `events` (dicts of the 17 fields + seq, prev_hash, hash) in seq order.

    Stops at the first break. Pass that organization's checkpoints, signatures already verified; each
    is compared (chain head, and Merkle root when computable) when the walk reaches its tree size. A
    payload may be an `orjson.Fragment` of its stored canonical text (see integrity/canonical.py),
    which avoids parsing it and checking it again.

        report = verify_chain(iter_chain(storage, org_id), checkpoints=[saved])
        if report.broken is not None:
            raise ChainBrokenError(report.broken.seq, report.broken.reason)
    """
    verifier = ChainVerifier(
        start_seq=start_seq, prev_hash=prev_hash, frontier=frontier, checkpoints=checkpoints
    )
    if verifier.broken is None:
        for event in events:
            if verifier.feed(event) is not None:
                break
    return verifier.finish()

