"""`auditkeep verify-bundle`: check an evidence bundle offline, with nothing but the zip (docs/integrity.md §12).

Every failure is collected and named, one line each, rather than stopping at the first: an auditor wants to
know everything that is wrong. Memory: 72 bytes an event (evidence/ledger.py), the events streamed from the
zip line by line.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from auditkeep.evidence.ledger import Ledger, link_failures, proof_failures
from auditkeep.evidence.making import (
    CHECKPOINTS,
    EVENTS,
    FORMAT,
    MANIFEST,
    PROOFS,
    PUBLIC_KEY,
    README,
    REPORT,
)
from auditkeep.integrity.checkpoints import Checkpoint
from auditkeep.integrity.export import is_statement
from auditkeep.integrity.keyring import load_public_keys, verify_with_ring
from auditkeep.integrity.verify import check_event, event_hash, missing_fields

EXIT_OK, EXIT_FAILED, EXIT_UNREADABLE = 0, 1, 2
REQUIRED = (EVENTS, CHECKPOINTS, PROOFS, PUBLIC_KEY, README, REPORT)
_CHUNK = 1 << 20


class UnreadableBundleError(ValueError):
    """Not a zip, or no manifest to check it against (exit 2)."""


@dataclass
class BundleReport:
    """What verify-bundle found: `failures` empty means every check held."""

    organization: str | None = None
    events: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    filtered: bool | None = None
    tree_sizes: tuple[int, int] | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.failures else EXIT_OK

    def summary(self) -> list[str]:
        """The verdict first, then what was checked, then one line per failure."""
        verdict = f"FAILED: {len(self.failures)} problem(s)" if self.failures else "OK: the bundle verifies"
        span = f", seq {self.first_seq}..{self.last_seq}" if self.first_seq is not None else ""
        lines = [verdict, f"organization: {self.organization}; events: {self.events}{span}; query "
                 + ("filtered" if self.filtered else "unfiltered (every seq of the range must be present)")]
        if self.tree_sizes is not None:
            lines.append(f"checkpoints: before at tree size {self.tree_sizes[0]}, after at {self.tree_sizes[1]}")
        lines += [f"failed: {f}" for f in self.failures]
        return lines


def _json(zf: zipfile.ZipFile, name: str, report: BundleReport) -> Any:
    try:
        return orjson.loads(zf.read(name))
    except KeyError:
        return None  # reported as a missing file
    except orjson.JSONDecodeError as exc:
        report.failures.append(f"{name}: not valid JSON ({exc})")
        return None


def verify_bundle(path: Path | str) -> BundleReport:
    """Check the bundle at `path`; UnreadableBundleError when it is not one (no zip, no manifest).

        report = verify_bundle("evidence-acme-2026-03-31.zip")
        sys.exit(report.exit_code)
    """
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise UnreadableBundleError(f"{path}: not a readable zip ({exc})") from None
    with zf:
        try:
            manifest = orjson.loads(zf.read(MANIFEST))
        except (KeyError, orjson.JSONDecodeError, zipfile.BadZipFile, OSError) as exc:
            raise UnreadableBundleError(f"{path}: no readable {MANIFEST} ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(
                manifest.get("files"), dict):
            raise UnreadableBundleError(f"{path}: {MANIFEST} is not an auditkeep evidence bundle's manifest")
        report = BundleReport(organization=manifest.get("organization"))
        _check_files(zf, manifest, report)
        keys = _keys(zf, report)
        before, after = _checkpoints(zf, manifest, keys, report)
        ledger = _read_events(zf, manifest, report)
        order = ledger.ordered()
        report.filtered = _filtered(manifest)
        report.failures += link_failures(ledger, order, filtered=report.filtered)
        _check_counts(manifest, ledger, order, report)
        proofs = _json(zf, PROOFS, report)
        if after is not None and isinstance(proofs, Mapping):
            report.failures += proof_failures(ledger, order, proofs, before, after)
            report.tree_sizes = (before.tree_size if before else 0, after.tree_size)
        elif after is not None and proofs is not None:
            report.failures.append(f"{PROOFS}: not a JSON object")
    return report


def _check_files(zf: zipfile.ZipFile, manifest: Mapping[str, Any], report: BundleReport) -> None:
    listed: Mapping[str, Any] = manifest["files"]
    present = set(zf.namelist())
    for name in REQUIRED:
        if name not in listed:
            report.failures.append(f"{MANIFEST}: {name} is not listed")
    for name, digest in listed.items():
        if name not in present:
            report.failures.append(f"{name}: missing from the bundle")
            continue
        sha = hashlib.sha256()
        try:
            with zf.open(name) as f:
                while block := f.read(_CHUNK):
                    sha.update(block)
        except (zipfile.BadZipFile, OSError) as exc:
            report.failures.append(f"{name}: unreadable ({exc})")
            continue
        if sha.hexdigest() != digest:
            report.failures.append(f"{name}: SHA-256 {sha.hexdigest()} differs from the manifest's {digest}")
    for name in sorted(present - set(listed) - {MANIFEST}):
        report.failures.append(f"{name}: not listed in the manifest (an added file)")


def _keys(zf: zipfile.ZipFile, report: BundleReport) -> dict[str, Any]:
    try:
        return load_public_keys(zf.read(PUBLIC_KEY))
    except KeyError:
        return {}
    except ValueError as exc:
        report.failures.append(f"{PUBLIC_KEY}: {exc}")
        return {}


def _checkpoints(zf: zipfile.ZipFile, manifest: Mapping[str, Any], keys: Mapping[str, Any],
                 report: BundleReport) -> tuple[Checkpoint | None, Checkpoint | None]:
    doc = _json(zf, CHECKPOINTS, report)
    if not isinstance(doc, Mapping):
        if doc is not None:
            report.failures.append(f"{CHECKPOINTS}: not a JSON object")
        return None, None
    found: dict[str, Checkpoint | None] = {}
    for name in ("before", "after"):
        raw = doc.get(name)
        if raw is None:
            found[name] = None
            continue
        try:
            cp = Checkpoint.model_validate(raw)
        except ValueError as exc:
            report.failures.append(f"{CHECKPOINTS}: the {name} checkpoint is malformed ({str(exc).splitlines()[0]})")
            found[name] = None
            continue
        found[name] = cp
        if not verify_with_ring(cp, keys):
            report.failures.append(f"{CHECKPOINTS}: the {name} checkpoint's signature does not verify with "
                                   f"the bundle's public key (key {cp.key_id})")
        if cp.org != manifest.get("organization"):
            report.failures.append(f"{CHECKPOINTS}: the {name} checkpoint is of organization {cp.org!r}, "
                                   f"not {manifest.get('organization')!r}")
    if doc.get("after") is None:
        report.failures.append(f"{CHECKPOINTS}: no usable after checkpoint: nothing ties the events to a signature")
    return found["before"], found["after"]


def _filtered(manifest: Mapping[str, Any]) -> bool:
    query = manifest.get("query")
    return isinstance(query, Mapping) and query.get("filtered") is True


def _read_events(zf: zipfile.ZipFile, manifest: Mapping[str, Any], report: BundleReport) -> Ledger:
    """Check each event's hash against its content, and the file's (timestamp, seq) order."""
    ledger = Ledger()
    failures = report.failures
    try:
        raw = zf.open(EVENTS)
    except KeyError:
        return ledger
    last: tuple[str, int] | None = None
    statement_seen = False
    with raw:
        for number, line in enumerate(_lines(raw), start=1):
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                failures.append(f"{EVENTS} line {number}: not valid JSON ({exc})")
                continue
            if not isinstance(event, dict):
                failures.append(f"{EVENTS} line {number}: not a JSON object")
                continue
            if is_statement(event):
                if number != 1 or statement_seen:
                    failures.append(f"{EVENTS} line {number}: a query statement after the first line")
                elif event["query"] != manifest.get("query"):
                    failures.append(f"{EVENTS}: the query statement differs from the manifest's query")
                statement_seen = True
                continue
            checked = _check_event(event, number, failures)
            if checked is None:
                continue
            seq, prev_hash, digest = checked
            key = (str(event.get("timestamp")), seq)
            if last is not None and key <= last:
                failures.append(f"seq {seq} ({EVENTS} line {number}): out of order, after seq {last[1]} "
                                "(events are in (timestamp, seq) order: a reordered event)")
            last = key
            ledger.add(seq, prev_hash, digest)
    if not statement_seen:
        failures.append(f"{EVENTS}: no query statement on its first line")
    return ledger


def _check_event(event: dict[str, Any], number: int, failures: list[str]) -> tuple[int, bytes, bytes] | None:
    """(seq, prev_hash, hash) of a well-formed event, its content hash checked; None if malformed."""
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


def _lines(raw: IO[bytes]) -> Iterator[bytes]:
    """The lines of a zip entry, read in 1 MiB blocks (ZipExtFile.readline is pure Python, per line)."""
    pending = b""
    while block := raw.read(_CHUNK):
        parts = (pending + block).split(b"\n")
        pending = parts.pop()
        yield from parts
    if pending:
        yield pending


def _check_counts(manifest: Mapping[str, Any], ledger: Ledger, order: Any, report: BundleReport) -> None:
    seqs = ledger.seqs
    report.events = len(seqs)
    report.first_seq = seqs[order[0]] if len(seqs) else None
    report.last_seq = seqs[order[-1]] if len(seqs) else None
    counts = manifest.get("counts")
    stated = counts.get("events") if isinstance(counts, Mapping) else None
    if stated != report.events:
        report.failures.append(f"{MANIFEST}: states {stated} events, {EVENTS} holds {report.events}")
    for name, actual in (("first_seq", report.first_seq), ("last_seq", report.last_seq)):
        if manifest.get(name) != actual:
            report.failures.append(f"{MANIFEST}: {name} is {manifest.get(name)}, the events' is {actual}")
