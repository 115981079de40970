"""Offline verification of an export made with `include=integrity` (`auditkeep verify-export`, issue #3).

Needs nothing but the export's events, the public key document and, optionally, a checkpoint saved
earlier; reading the file is the CLI's job, with the SDK's export reader (client/_files.py). Order of
records does not matter. An export is held to completeness (no seq absent from the first exported
through the last, or through the checkpoint's tree size) unless it states that its query was filtered
(issue #9): seqs absent from an unfiltered export were removed. docs/integrity.md ("Verifying an
export") states the rules this implements.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditkeep.errors import AuditKeepError
from auditkeep.integrity.chain import ZERO_HASH
from auditkeep.integrity.checkpoints import Checkpoint, public_key_id, verify_checkpoint
from auditkeep.integrity.merkle import leaf_hash, root
from auditkeep.integrity.verify import BreakKind, ChainBreak, check_event, event_hash, missing_fields

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_CHECKPOINT_EVENT_MISSING = 2
_REPORTED = 100  # problems and gap ranges kept in a report; the counts cover all of them


class ExportFormatError(AuditKeepError, ValueError):
    """An event without the integrity fields: the export was not made with `include=integrity`."""


def is_statement(record: Mapping[str, Any]) -> bool:
    """Whether a record is an export's query statement (`{"query": {...}}`, no event field) rather than an event."""
    return "query" in record and "seq" not in record and "hash" not in record


def stated_filtered(statements: list[Mapping[str, Any]]) -> bool:
    """Whether an export's statements say its query was filtered; all must (an export without one is not)."""
    return bool(statements) and all(
        isinstance(s.get("query"), Mapping) and s["query"].get("filtered") is True for s in statements
    )


def describe_missing(ranges: Iterable[tuple[int, int]], count: int, total_ranges: int | None = None,
                     shown: int = 10) -> str:
    """`missing seq 5, 12-21, 40-49 (22 events)`: absent seq ranges, compactly, the first `shown` of them
    (of `total_ranges`, if more than `ranges` holds)."""
    listed = list(ranges)
    total = len(listed) if total_ranges is None else total_ranges
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in listed[:shown]]
    if total > shown:
        parts.append(f"... {total - shown} more range(s)")
    return f"missing seq {', '.join(parts)} ({count} event{'' if count == 1 else 's'})"


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What `verify-export` found; `exit_code` is 0 (all holds), 1 (mismatch) or 2 (inconclusive)."""

    exit_code: int
    reason: str | None  # why the exit code is not 0
    first_bad_seq: int | None
    problems: tuple[ChainBreak, ...]  # lowest seq first, at most 100 of `problem_count`
    problem_count: int
    events: int  # distinct seqs in the export
    duplicates: int  # identical repeats of an event, ignored
    first_seq: int | None
    last_seq: int | None
    gaps: tuple[tuple[int, int], ...]  # absent seq ranges (inclusive) between first and last, ≤ 100
    missing: int  # seqs absent between first_seq and last_seq
    checkpoint: Checkpoint | None
    signature_valid: bool | None  # None without a checkpoint
    anchored: tuple[int, int] | None  # seqs linked by hashes to the checkpoint's chain head
    root_checked: bool  # the export held seq 1..tree_size and their Merkle root matched
    unlinked: int  # events at or before the checkpoint that a gap separates from it
    not_yet_anchored: int  # events after the checkpoint (all of them without one)
    query: Mapping[str, Any] | None = None  # the export's query statement, if it has one
    complete: bool = True  # whether absent seqs were failures (--complete, or no filtered statement)
    incomplete: tuple[tuple[int, int], ...] = ()  # with `complete`: absent seq ranges, first to checkpoint
    incomplete_count: int = 0  # seqs in `incomplete`, all of them
    incomplete_ranges: int = 0  # ranges in `incomplete`, all of them

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    @property
    def _stated_filtered(self) -> bool:
        return self.query is not None and self.query.get("filtered") is True

    def summary(self) -> list[str]:
        """Human-readable lines for the CLI, the verdict first."""
        if self.exit_code == EXIT_OK:
            verdict = "OK"
        elif self.exit_code == EXIT_MISMATCH:
            verdict = "FAILED"
        else:
            verdict = "INCONCLUSIVE"
        lines = [f"{verdict}: {self.reason}" if self.reason else f"{verdict}: every event verifies"]
        span = f", seq {self.first_seq}..{self.last_seq}" if self.first_seq is not None else ""
        repeats = f" ({self.duplicates} identical repeat(s) ignored)" if self.duplicates else ""
        lines.append(f"events: {self.events}{span}{repeats}")
        lines.extend(f"problem: {problem}" for problem in self.problems if str(problem) != self.reason)
        if self.problem_count > len(self.problems):
            lines.append(f"... and {self.problem_count - len(self.problems)} more problem(s)")
        if self.query is not None:
            filtered = "filtered" if self.query.get("filtered") is True else "unfiltered"
            lines.append(f"export states its query: {filtered} (not signed)")
        if self.missing and not self.complete:
            shown = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in self.gaps[:10])
            more = ", ..." if len(self.gaps) > 10 else ""
            why = "the export states its query is filtered" if self._stated_filtered else "--no-complete"
            lines.append(f"gaps (not a failure: {why}): {self.missing} seq(s) absent: {shown}{more}")
        absent = describe_missing(self.incomplete, self.incomplete_count, self.incomplete_ranges)
        if self.incomplete_count and self.reason != absent:
            lines.append(f"incomplete: {absent}")
        if self.checkpoint is not None:
            cp = self.checkpoint
            valid = "valid" if self.signature_valid else "INVALID"
            lines.append(f"checkpoint: org {cp.org}, tree size {cp.tree_size}, issued {cp.issued_at}")
            lines.append(f"checkpoint signature: {valid} (key {cp.key_id})")
        if self.anchored is not None:
            root_note = ", Merkle root recomputed" if self.root_checked else ""
            lines.append(f"anchored by the checkpoint: seq {self.anchored[0]}..{self.anchored[1]}{root_note}")
        if self.unlinked:
            lines.append(
                f"not linked to the checkpoint (a gap lies between): {self.unlinked} event(s); "
                "ask the server for inclusion proofs"
            )
        if self.not_yet_anchored:
            lines.append(f"not yet anchored (after the checkpoint): {self.not_yet_anchored} event(s)")
        return lines


class _Findings:
    """Everything learnt while reading an export, before the verdict."""

    def __init__(self) -> None:
        self.records: dict[int, bytes] = {}  # seq -> prev_hash ‖ hash
        self.problems: dict[int, ChainBreak] = {}
        self.duplicates = 0
        self.gaps: list[tuple[int, int]] = []
        self.missing = 0
        self.root_checked = False
        self.statements: list[Mapping[str, Any]] = []

    def problem(self, seq: int, kind: BreakKind, reason: str) -> None:
        self.problems.setdefault(seq, ChainBreak(seq, kind, reason))

    def read(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Check each event's hash against its own prev_hash and content; keep (prev_hash, hash)."""
        position = 0
        for event in events:
            if is_statement(event):
                self.statements.append(event)
                continue
            position += 1
            seq = event.get("seq")
            if type(seq) is not int or seq < 1:
                raise ExportFormatError(
                    f"event #{position} has no positive integer seq; export with include=integrity"
                )
            checked = check_event(event)
            if isinstance(checked, str):
                self.problem(seq, BreakKind.MALFORMED, checked)
                continue
            _, prev_hash, stored = checked
            try:
                digest = event_hash(event, prev_hash)
            except KeyError:
                self.problem(seq, BreakKind.MALFORMED, missing_fields(event))
                continue
            except (TypeError, ValueError) as exc:
                # A value the service never hashes (an integer beyond ±(2**53 - 1), a lone surrogate):
                # rfc8785 and orjson refuse to serialize it.
                self.problem(seq, BreakKind.MALFORMED, f"content has no canonical form ({exc})")
                continue
            if digest != stored:
                self.problem(seq, BreakKind.HASH_MISMATCH, "hash does not match the event's content")
            record = prev_hash + stored
            if seq not in self.records:
                self.records[seq] = record
            elif self.records[seq] == record:
                self.duplicates += 1
            else:
                self.problem(seq, BreakKind.DUPLICATE_SEQ, f"two different events carry seq {seq}")

    def link(self, seqs: list[int]) -> None:
        """Where seq - 1 is present too, this prev_hash must be its hash; elsewhere note a gap."""
        records = self.records
        previous: int | None = None
        for seq in seqs:
            prev_hash = records[seq][:32]
            if seq == 1:
                if prev_hash != ZERO_HASH:
                    self.problem(1, BreakKind.PREV_HASH_MISMATCH, "prev_hash of seq 1 is not 64 zeros")
            elif previous == seq - 1:
                if prev_hash != records[previous][32:]:
                    self.problem(
                        seq, BreakKind.PREV_HASH_MISMATCH, f"prev_hash is not the hash of seq {previous}"
                    )
            elif previous is not None:
                self.gaps.append((previous + 1, seq - 1))
                self.missing += seq - 1 - previous
            previous = seq

    def anchor(self, checkpoint: Checkpoint) -> tuple[int, int] | None:
        """The seq range hash-linked to the checkpoint's chain head; checks the root if it starts at 1."""
        size = checkpoint.tree_size
        records = self.records
        if size not in records:
            return None
        if records[size][32:].hex() != checkpoint.chain_head:
            self.problem(size, BreakKind.CHECKPOINT_MISMATCH, "hash differs from the checkpoint's chain_head")
        start = size
        while start - 1 in records and records[start][:32] == records[start - 1][32:]:
            start -= 1
        if start == 1:
            tree_root = root([leaf_hash(records[seq][32:]) for seq in range(1, size + 1)])
            self.root_checked = tree_root.hex() == checkpoint.root_hash
            if not self.root_checked:
                self.problem(
                    size,
                    BreakKind.CHECKPOINT_MISMATCH,
                    f"Merkle root over seq 1..{size} differs from the checkpoint's root_hash",
                )
        return start, size


def _signature_problem(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> str | None:
    if verify_checkpoint(checkpoint, public_key):
        return None
    key_id = public_key_id(public_key)
    if checkpoint.key_id != key_id:
        return f"checkpoint was signed by key {checkpoint.key_id}, not by the given key {key_id}"
    return "checkpoint signature does not verify with this public key"


def verify_export(
    events: Iterable[Mapping[str, Any]],
    *,
    public_key: Ed25519PublicKey | None = None,
    checkpoint: Checkpoint | None = None,
    complete: bool | None = None,
) -> ExportReport:
    """Check an export's events (any order) and, given one, a checkpoint against them.

    `events` may include the export's query statement (`{"query": {...}}`, read with
    `iter_records(..., statements=True)`). With `complete` (the default unless a statement says the
    query was filtered; `False` relaxes it) every seq from the first exported through the last, or
    through the checkpoint's tree size if that is higher, must be present: otherwise exit 1, naming the
    absent ranges.

    `events` is best an iterator that reads the file as it goes: what is kept per event is 64 bytes
    (prev_hash ‖ hash) plus dict overhead, about 200 bytes an event whatever the event's size.

        from auditkeep.client._files import iter_records

        with open("export.ndjson", "rb") as f:
            report = verify_export(iter_records(f, "ndjson"), public_key=key, checkpoint=saved)
        sys.exit(report.exit_code)
    """
    findings = _Findings()
    findings.read(events)
    seqs = sorted(findings.records)
    findings.link(seqs)

    reason: str | None = None
    signature_valid: bool | None = None
    anchored: tuple[int, int] | None = None
    unlinked = 0
    not_yet_anchored = len(seqs)
    checkpoint_event_missing = False
    if checkpoint is not None:
        if public_key is None:
            raise ValueError("a checkpoint can only be checked with the public key")
        reason = _signature_problem(checkpoint, public_key)
        signature_valid = reason is None
        covered = bisect.bisect_right(seqs, checkpoint.tree_size)  # events at or before the checkpoint
        not_yet_anchored = len(seqs) - covered
        anchored = findings.anchor(checkpoint)
        unlinked = covered - (anchored[1] - anchored[0] + 1 if anchored else 0)
        checkpoint_event_missing = anchored is None and checkpoint.tree_size > 0

    if complete is None:
        complete = not stated_filtered(findings.statements)
    incomplete: list[tuple[int, int]] = []
    incomplete_count = 0
    if complete and seqs:
        incomplete = list(findings.gaps)
        incomplete_count = findings.missing
        if checkpoint is not None and checkpoint.tree_size > seqs[-1]:
            incomplete.append((seqs[-1] + 1, checkpoint.tree_size))
            incomplete_count += checkpoint.tree_size - seqs[-1]

    ordered = [findings.problems[seq] for seq in sorted(findings.problems)]
    if reason is not None or ordered:
        exit_code = EXIT_MISMATCH
        reason = reason or str(ordered[0])
    elif incomplete_count:
        exit_code = EXIT_MISMATCH
        reason = describe_missing(incomplete, incomplete_count, len(incomplete))
    elif checkpoint is not None and checkpoint_event_missing:
        exit_code = EXIT_CHECKPOINT_EVENT_MISSING
        reason = f"seq {checkpoint.tree_size}, the checkpoint's last event, is not in the export"
    else:
        exit_code = EXIT_OK
    return ExportReport(
        exit_code=exit_code,
        reason=reason,
        first_bad_seq=ordered[0].seq if ordered else None,
        problems=tuple(ordered[:_REPORTED]),
        problem_count=len(ordered),
        events=len(seqs),
        duplicates=findings.duplicates,
        first_seq=seqs[0] if seqs else None,
        last_seq=seqs[-1] if seqs else None,
        gaps=tuple(findings.gaps[:_REPORTED]),
        missing=findings.missing,
        checkpoint=checkpoint,
        signature_valid=signature_valid,
        anchored=anchored,
        root_checked=findings.root_checked,
        unlinked=unlinked,
        not_yet_anchored=not_yet_anchored,
        query=next((s["query"] for s in findings.statements if isinstance(s["query"], Mapping)), None),
        complete=complete,
        incomplete=tuple(incomplete[:_REPORTED]),
        incomplete_count=incomplete_count,
        incomplete_ranges=len(incomplete),
    )
