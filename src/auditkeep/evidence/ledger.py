"""The chain facts of a bundle's events, kept compactly (seq, prev_hash, hash: 72 bytes an event), and the
checks over them that need no event content: links, gaps, proofs against the checkpoints. Both the maker
(the report's "verified when made") and `verify-bundle` run these (docs/integrity.md §12).
"""

from __future__ import annotations

import hashlib
import itertools
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from auditkeep.evidence.proofs import ProofError, range_root
from auditkeep.integrity.chain import ZERO_HASH
from auditkeep.integrity.checkpoints import Checkpoint
from auditkeep.integrity.export import describe_missing
from auditkeep.integrity.merkle import EMPTY_ROOT, verify_consistency, verify_inclusion

_sha256 = hashlib.sha256


class Ledger:
    """(seq, prev_hash, hash) of each event in file order; `ordered()` gives positions in seq order.

    The hashes sit in two flat byte strings, so the common case (every seq once, in order, each linked to
    the one before) is checked by a few comparisons in C rather than a Python step per event (a 1,000,000-
    event bundle: ~1.5 s of link checking before, issue #12's speed targets).
    """

    def __init__(self) -> None:
        self.seqs = array("q")
        self.prevs = bytearray()  # prev_hash of each event, 32 bytes an event
        self.hashes = bytearray()  # hash of each event, 32 bytes an event

    def add(self, seq: int, prev_hash: bytes, digest: bytes) -> None:
        self.seqs.append(seq)
        self.prevs += prev_hash
        self.hashes += digest

    def extend(self, seqs: Iterable[int], prevs: bytes | bytearray, hashes: bytes | bytearray) -> None:
        """Append many events at once: their seqs, and their prev_hashes and hashes concatenated."""
        self.seqs.extend(seqs)
        self.prevs += prevs
        self.hashes += hashes

    def __len__(self) -> int:
        return len(self.seqs)

    def prev_hash(self, i: int) -> bytes:
        return bytes(self.prevs[32 * i:32 * i + 32])

    def hash(self, i: int) -> bytes:
        return bytes(self.hashes[32 * i:32 * i + 32])

    def in_order(self) -> bool:
        """Whether file order is seq order (each seq greater than the one before)."""
        seqs = self.seqs
        return all(map(int.__lt__, seqs, itertools.islice(seqs, 1, None)))

    def ordered(self) -> Sequence[int]:
        """Positions by seq (file order is timestamp order, which back-dated events make differ).

        When the seqs are each of a run once (an unfiltered bundle: every seq of first..last), each
        position is put at its seq's place in a flat array (8 bytes an event) instead of sorting: sorting
        with a key held two lists of int objects (~80 MB at 1,000,000 events, making's peak memory on
        PostgreSQL, docs/benchmarks.md). Anything else (gaps, duplicates) is sorted.
        """
        seqs = self.seqs
        n = len(seqs)
        if self.in_order():
            return range(n)
        first = min(seqs)
        if max(seqs) - first + 1 == n:
            order = array("q", bytes(8 * n))
            placed = bytearray(n)
            for i, seq in enumerate(seqs):
                placed[seq - first] = 1
                order[seq - first] = i
            if placed.count(0) == 0:  # every seq of the run once
                return order
        return sorted(range(n), key=seqs.__getitem__)

    def leaves(self, order: Sequence[int], batch: int = 8192) -> Iterator[list[bytes]]:
        """The Merkle leaf hashes `SHA-256(0x00 ‖ hash)` of the events in `order`, a list per batch."""
        # Read in place (bytes + a memoryview's slice is bytes): a copy of the hashes was 32 MB at 1,000,000.
        hashes, sha = memoryview(self.hashes), _sha256
        try:
            for at in range(0, len(order), batch):
                part = order[at:at + batch]
                yield [sha(b"\x00" + hashes[32 * i:32 * i + 32]).digest() for i in part]
        finally:
            hashes.release()  # the ledger's bytearray may grow again

    def linked_run(self, order: Sequence[int], block: int = 65536) -> bool:
        """Whether the events in `order` are consecutive seqs each linked to the one before (checked in C;
        when file order is not seq order, e.g. back-dated events, the facts are gathered in seq order a
        block at a time, so memory stays a block's, ~4 MB, beside the ledger)."""
        n = len(order)
        if not n:
            return False
        seqs, prevs, hashes = self.seqs, self.prevs, self.hashes
        first = seqs[order[0]]
        if first == 1 and prevs[32 * order[0]:32 * order[0] + 32] != ZERO_HASH:
            return False
        if isinstance(order, range):  # memoryviews: compared in place, not copied (64 MB at 1,000,000)
            return seqs == array("q", range(first, first + n)) and memoryview(prevs)[32:] == memoryview(hashes)[:-32]
        last_hash = b""
        for at in range(0, n, block):
            part = order[at:at + block]
            if array("q", map(seqs.__getitem__, part)) != array("q", range(first + at, first + at + len(part))):
                return False
            block_prevs = b"".join([prevs[32 * i:32 * i + 32] for i in part])
            block_hashes = b"".join([hashes[32 * i:32 * i + 32] for i in part])
            linked = (block_prevs == last_hash + block_hashes[:-32]) if last_hash else (
                block_prevs[32:] == block_hashes[:-32])
            if not linked:
                return False
            last_hash = block_hashes[-32:]
        return True


def link_failures(ledger: Ledger, order: Sequence[int], *, filtered: bool) -> list[str]:
    """Duplicate seqs, broken links between consecutive seqs and, unless the query is filtered, gaps."""
    if ledger.linked_run(order):
        return []  # nothing to report, found in C: the loop below names what is wrong otherwise
    failures: list[str] = []
    gaps: list[tuple[int, int]] = []
    missing = 0
    previous: int | None = None
    for i in order:
        seq = ledger.seqs[i]
        if previous is not None and ledger.seqs[previous] == seq:
            failures.append(f"seq {seq}: appears twice in events.ndjson (an added event)")
            continue
        if seq == 1 and ledger.prev_hash(i) != ZERO_HASH:
            failures.append("seq 1: prev_hash is not 64 zeros")
        elif previous is not None and ledger.seqs[previous] == seq - 1:
            if ledger.prev_hash(i) != ledger.hash(previous):
                failures.append(f"seq {seq}: prev_hash is not the hash of seq {seq - 1}")
        elif previous is not None:
            gaps.append((ledger.seqs[previous] + 1, seq - 1))
            missing += seq - 1 - ledger.seqs[previous]
        previous = i
    if gaps and not filtered:
        failures.append(f"events.ndjson: {describe_missing(gaps, missing)} from an unfiltered bundle")
    return failures


def _hexes(values: Any, what: str) -> list[bytes]:
    if not isinstance(values, list) or not all(isinstance(v, str) and len(v) == 64 for v in values):
        raise ProofError(f"{what} is not a list of 64-digit hex hashes")
    try:
        return [bytes.fromhex(v) for v in values]
    except ValueError:
        raise ProofError(f"{what} is not a list of 64-digit hex hashes") from None


def proof_failures(ledger: Ledger, order: Sequence[int], proofs: Mapping[str, Any], before: Checkpoint | None,
                   after: Checkpoint) -> list[str]:
    """The range or inclusion proofs bind every event's hash to the after checkpoint's root; the
    consistency proof binds the before checkpoint's tree to the after's."""
    failures: list[str] = []
    size = after.tree_size
    if proofs.get("tree_size") != size:
        failures.append(f"proofs.json: tree_size {proofs.get('tree_size')} is not the after checkpoint's {size}")
    root = bytes.fromhex(after.root_hash)
    seqs = ledger.seqs
    beyond = [seqs[i] for i in order if seqs[i] > size]
    if beyond:
        failures.append(f"seq {beyond[0]}: beyond the after checkpoint's tree size {size} "
                        f"({len(beyond)} such event(s): added events)")
    try:
        failures += _member_failures(ledger, order, proofs, size, root)
        first = before.tree_size if before is not None else 0
        first_root = bytes.fromhex(before.root_hash) if before is not None else EMPTY_ROOT
        consistency = proofs.get("consistency")
        if not isinstance(consistency, Mapping):
            raise ProofError("proofs.json: no consistency proof")
        path = _hexes(consistency.get("proof"), "the consistency proof")
        if (consistency.get("first"), consistency.get("second")) != (first, size):
            failures.append(f"consistency proof: between sizes {consistency.get('first')} and "
                            f"{consistency.get('second')}, not the checkpoints' {first} and {size}")
        elif not verify_consistency(first, size, path, first_root, root):
            failures.append(f"consistency proof: does not show tree size {first} (before) is a prefix of {size} "
                            "(after)")
    except ProofError as exc:
        failures.append(str(exc))
    if ledger.seqs and before is not None and min(seqs) <= before.tree_size:
        failures.append(f"checkpoints.json: the before checkpoint (tree size {before.tree_size}) is not before "
                        f"the first event (seq {min(seqs)})")
    return failures


def _member_failures(ledger: Ledger, order: Sequence[int], proofs: Mapping[str, Any], size: int,
                     root: bytes) -> list[str]:
    """Every event's leaf `SHA-256(0x00 ‖ hash)` under `root`: by the range proof, or one inclusion proof each."""
    seqs = ledger.seqs
    span = proofs.get("range")
    inclusion = proofs.get("inclusion")
    if span is not None:
        if not isinstance(span, Mapping) or inclusion:
            raise ProofError("proofs.json: a range proof and inclusion proofs at once")
        first, last = span.get("first_seq"), span.get("last_seq")
        held = len(order)
        in_seq_order = seqs if isinstance(order, range) else array("q", map(seqs.__getitem__, order))
        if (type(first) is not int or type(last) is not int or last - first + 1 != held
                or in_seq_order != array("q", range(first, first + held))):
            span_text = f"seq {seqs[order[0]]}..{seqs[order[-1]]}" if held else "none"
            return [f"range proof: covers seq {first}..{last}, but the events are {held} event(s), {span_text}, "
                    "not that run: an event was added or removed"]
        if last > size:
            return []  # reported as events beyond the tree
        found = range_root(_hexes(span.get("left"), "the range proof's left nodes"), ledger.leaves(order),
                           _hexes(span.get("right"), "the range proof's right nodes"), first_seq=first,
                           count=held, tree_size=size)
        if found != root:
            return [f"range proof: the Merkle root over seq {first}..{last} and the proof is not the after "
                    "checkpoint's root_hash"]
        return []
    if not isinstance(inclusion, list):
        raise ProofError("proofs.json: neither a range proof nor inclusion proofs")
    given: dict[int, list[bytes]] = {}
    failures: list[str] = []
    for entry in inclusion:
        seq = entry.get("seq") if isinstance(entry, Mapping) else None
        if type(seq) is not int:
            raise ProofError("proofs.json: an inclusion proof without an integer seq")
        given[seq] = _hexes(entry.get("audit_path"), f"the inclusion proof of seq {seq}")
    present = set()
    for i in order:
        seq = seqs[i]
        present.add(seq)
        path = given.get(seq)
        if path is None:
            failures.append(f"seq {seq}: no inclusion proof")
        elif seq <= size and not verify_inclusion(_sha256(b"\x00" + ledger.hash(i)).digest(), seq - 1, size, path,
                                                  root):
            failures.append(f"seq {seq}: inclusion proof does not verify against the after checkpoint")
    extra = sorted(set(given) - present)
    if extra:
        failures.append(f"proofs.json: inclusion proofs for seq {_describe(extra)}, which events.ndjson lacks "
                        "(an event was removed)")
    return failures


def _describe(seqs: Sequence[int]) -> str:
    if not seqs:
        return "none"
    shown = ", ".join(str(s) for s in seqs[:5])
    return shown + (f", ... ({len(seqs)} in all)" if len(seqs) > 5 else "")
