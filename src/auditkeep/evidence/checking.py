"""`auditkeep verify-bundle`: check an evidence bundle offline, with nothing but the zip (docs/integrity.md §12).

Every failure is collected and named, one line each, rather than stopping at the first: an auditor wants to
know everything that is wrong. Memory: 72 bytes an event (evidence/ledger.py), the events streamed from the
zip line by line.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
from isal import isal_zlib

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
from auditkeep.evidence.workers import PARALLEL_MIN_EVENTS, check_events
from auditkeep.integrity.checkpoints import Checkpoint
from auditkeep.integrity.keyring import load_public_keys, verify_with_ring

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


def verify_bundle(path: Path | str, *, workers: int | None = None) -> BundleReport:
    """Check the bundle at `path`; UnreadableBundleError when it is not one (no zip, no manifest).

    `workers`: processes checking the events (default: one per CPU for a bundle of 50,000 events or more,
    else this process alone); the report is the same whatever the number.

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
        events_digest_at = _check_files(zf, manifest, report)
        keys = _keys(zf, report)
        before, after = _checkpoints(zf, manifest, keys, report)
        ledger = _read_events(zf, manifest, report, events_digest_at, workers)
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


def _check_files(zf: zipfile.ZipFile, manifest: Mapping[str, Any], report: BundleReport) -> int | None:
    """Check each listed file's SHA-256 but events.ndjson's, which `_read_events` hashes as it reads it;
    the index in `report.failures` where a mismatch of that file goes (None: it is missing)."""
    listed: Mapping[str, Any] = manifest["files"]
    events_at: int | None = None
    present = set(zf.namelist())
    for name in REQUIRED:
        if name not in listed:
            report.failures.append(f"{MANIFEST}: {name} is not listed")
    for name, digest in listed.items():
        if name not in present:
            report.failures.append(f"{name}: missing from the bundle")
            continue
        if name == EVENTS:
            events_at = len(report.failures)
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
    return events_at


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


def _read_events(zf: zipfile.ZipFile, manifest: Mapping[str, Any], report: BundleReport, digest_at: int | None,
                 workers: int | None) -> Ledger:
    """Check each event's hash against its content and the file's (timestamp, seq) order (evidence/lines.py,
    in worker processes for a large bundle), and the file's SHA-256 against the manifest's, in one pass."""
    counts = manifest.get("counts")
    stated = counts.get("events") if isinstance(counts, Mapping) else None
    if workers is None:
        large = isinstance(stated, int) and stated >= PARALLEL_MIN_EVENTS
        workers = (os.cpu_count() or 1) if large else 1
    sha = hashlib.sha256()
    try:
        raw = zf.open(EVENTS)
    except KeyError:
        return Ledger()
    _inflate_fast(raw)
    try:
        with raw:
            joined = check_events(raw, manifest.get("query"), workers=workers, sha=sha)
    except (zipfile.BadZipFile, OSError, zlib.error, _ISAL_ERROR) as exc:
        report.failures.append(f"{EVENTS}: unreadable ({exc})")
        return Ledger()
    found: list[str] = []
    expected = manifest["files"].get(EVENTS)
    if digest_at is not None and sha.hexdigest() != expected:
        found.append(f"{EVENTS}: SHA-256 {sha.hexdigest()} differs from the manifest's {expected}")
        report.failures[digest_at:digest_at] = found
    report.failures += joined.failures
    if not joined.statement:
        report.failures.append(f"{EVENTS}: no query statement on its first line")
    return joined.ledger


# Declared as an instance in python-isal's stubs; a class at run time.
_ISAL_ERROR = cast("type[Exception]", isal_zlib.error)


def _inflate_fast(raw: Any) -> None:
    """Have zipfile's entry reader `raw` (opened, nothing read yet) inflate with ISA-L (python-isal, as
    making deflates) instead of zlib: ~2x faster, in the parent's serial read (docs/benchmarks.md).
    zipfile has no hook for its decompressor, hence the private attributes; if a later Python renamed
    them, zlib inflates as before. The CRC and the manifest's SHA-256 are checked on what it inflates."""
    if getattr(raw, "_compress_type", None) == zipfile.ZIP_DEFLATED and getattr(raw, "_decompressor", None):
        raw._decompressor = isal_zlib.decompressobj(-isal_zlib.MAX_WBITS)


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
