"""Making an evidence bundle (issue #12): one zip an auditor checks offline with `auditkeep verify-bundle`.

`plan_bundle` fixes everything before a byte is sent (the checkpoints around the range, the snapshot, the
query statement) and records `evidence.export`; `write_bundle` then streams the zip: events.ndjson first,
read from the database in chunks and deflated as it goes, manifest.json last (it holds every other file's
SHA-256). zipfile writes to a non-seekable sink (data descriptors after each entry), so neither the API nor
the CLI holds the archive: what stays in memory is 72 bytes of chain facts an event (evidence/ledger.py)
and the report's counters. docs/integrity.md §12 specifies the format.
"""

from __future__ import annotations

import hashlib
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.resources import files
from typing import IO, Any

import orjson
from isal import isal_zlib

from auditkeep import __version__
from auditkeep.auth.principals import Principal
from auditkeep.evidence.ledger import Ledger, link_failures, proof_failures
from auditkeep.evidence.proofs import inclusion_proofs, keep_nodes, open_tree, range_nodes
from auditkeep.evidence.summary import Summary, render_report
from auditkeep.ingest import checkpointing
from auditkeep.ingest.selfaudit import Origin, audit
from auditkeep.integrity.checkpoints import Checkpoint, format_timestamp
from auditkeep.integrity.keyring import verify_with_ring
from auditkeep.storage import Storage
from auditkeep.storage import integrity as records
from auditkeep.storage.coverage import range_skips_inside
from auditkeep.storage.evidence import checkpoint_at_most, iter_bundle_rows, query_span
from auditkeep.storage.queries import LogFilters, LogQuery, choose_driver
from auditkeep.threads import WriteBehind, read_ahead

FORMAT = "auditkeep-evidence-bundle"
FORMAT_VERSION = 1
EVENTS, CHECKPOINTS, PROOFS, PUBLIC_KEY, README, REPORT, MANIFEST = (
    "events.ndjson", "checkpoints.json", "proofs.json", "public_key.json", "README.txt", "report.html",
    "manifest.json")
# Deflate level 1: ~5x smaller NDJSON at several times level 6's speed (the export's gzip uses it too).
_LEVEL = 1
# events.ndjson is deflated by ISA-L (python-isal) rather than zlib: the same deflate format, which any zip
# reader inflates. A 1,000,000-event bundle's 686 MB of NDJSON: 0.6 CPU s to 114 MB, where zlib's level 1
# took 3.0-4.9 CPU s to 129 MB (same run, docs/benchmarks.md). It releases the GIL as zlib does, so it
# still overlaps the database read.
_EVENTS_LEVEL = 1


@dataclass(frozen=True)
class BundleRequest:
    """What to put in a bundle: `[start, end)` (API timestamp text, None = open) and the GET's filters,
    `given` being the filter parameters as sent (the query statement's `filters`)."""

    start: str | None = None
    end: str | None = None
    filters: LogFilters = field(default_factory=LogFilters)
    given: dict[str, str] | None = None


FILTER_NAMES = ("action", "user_email", "user_id", "object_type", "object_id", "source", "status",
                "request_type", "is_support_user", "client_ip", "q")


def bundle_request(start: str | None, end: str | None, filters: LogFilters, given: dict[str, str]) -> BundleRequest:
    """A request from parsed filters and the parameters as sent (only the filters among them are kept)."""
    return BundleRequest(start, end, filters, {k: v for k, v in given.items() if k in FILTER_NAMES})


@dataclass(frozen=True)
class BundlePlan:
    """A bundle fixed before it is written: the snapshot is the after checkpoint's tree size."""

    org_id: int
    org_name: str
    request: BundleRequest
    before: Checkpoint | None
    after: Checkpoint
    statement: dict[str, Any]
    events: int
    created_at: str

    @property
    def filename(self) -> str:
        return f"evidence-{self.org_name}-{self.created_at[:10]}.zip"


def plan_bundle(storage: Storage, org_id: int, request: BundleRequest, origin: Origin, *,
                actor: Principal | None = None) -> BundlePlan:
    """Choose the checkpoints around the range (signing one at the head if none covers its last event), fix
    the snapshot and the query statement, and record `evidence.export` with the query and counts."""
    given = dict(request.given or {})
    with storage.read() as conn:
        head = records.read_head(conn, org_id)
        query = LogQuery(org_id=org_id, start=request.start, end=request.end, filters=request.filters,
                         max_seq=head.seq)
        span = query_span(storage, conn, choose_driver(conn, storage, query))
        found = records.list_checkpoints(conn, org_id, min_size=span.last_seq or head.seq, limit=1)
    after = (checkpointing.to_checkpoint(found[0]) if found
             else checkpointing.covering_checkpoint(storage, org_id, span.last_seq or head.seq))
    first = span.first_seq if span.first_seq is not None else after.tree_size + 1
    with storage.read() as conn:
        below = checkpoint_at_most(conn, org_id, first - 1)
        query = replace(query, max_seq=after.tree_size)
        span = query_span(storage, conn, choose_driver(conn, storage, query))
    before = checkpointing.to_checkpoint(below) if below is not None and below["tree_size"] > 0 else None
    if before is not None and before.tree_size < head.first_seq - 1:
        before = None  # inside a purged prefix: no consistency proof can start there (docs/integrity.md §9)
    filtered = bool(given) or range_skips_inside(storage, org_id, request.start, request.end, after.tree_size)
    # The statement an include=integrity NDJSON export of the same query carries (api/log_responses.py).
    statement = {"start_date": request.start, "end_date": request.end, "filters": given, "order": "asc",
                 "after_seq": None, "cursor": False, "limit": None, "filtered": filtered}
    who = actor.describe() if actor is not None else "the operator"
    audit(storage, org_id, "evidence.export", origin, actor=actor, object_type="evidence_bundle",
          object_id=after.tree_size,
          log_entry=f"{who} made an evidence bundle of {span.count} event(s)",
          payload={"query": statement, "events": span.count, "first_seq": span.first_seq,
                   "last_seq": span.last_seq, "tree_size": after.tree_size,
                   "before_tree_size": before.tree_size if before is not None else 0})
    return BundlePlan(org_id, head.org_name, request, before, after, statement, span.count,
                      format_timestamp(datetime.now(UTC)))


class _Sink:
    """A write-only, non-seekable file for zipfile: what it is given waits in `parts` until drained (by
    another thread than the one writing, hence the lock)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self._lock = threading.Lock()

    def write(self, data: bytes) -> int:
        with self._lock:
            self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def drain(self) -> bytes:
        with self._lock:
            out = b"".join(self.parts)
            self.parts.clear()
        return out


def _entry(name: str, plan: BundlePlan) -> zipfile.ZipInfo:
    """A zip entry dated when the bundle was made (UTC; zip dates have no zone), deflated, mode 0644."""
    made = datetime.strptime(plan.created_at[:19], "%Y-%m-%dT%H:%M:%S")
    info = zipfile.ZipInfo(name, date_time=made.timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info._compresslevel = _LEVEL  # type: ignore[attr-defined]  # Python 3.11's name for it (3.13: compress_level)
    info.external_attr = 0o644 << 16
    return info


def write_bundle(storage: Storage, plan: BundlePlan, *, reader: Storage | None = None) -> Iterator[bytes]:
    """The bundle's zip, chunk by chunk (blocking: it reads the database; run it in a worker thread).

    The events and the Merkle tree are read on `reader` (default `storage`): a read replica from
    `storage.for_read()` taken after `plan_bundle`, which holds everything the plan fixed (its checkpoint
    and `evidence.export` record included: storage/replicas.py, issue #14). The subtrees the proofs build
    are stored on `storage`, the primary.

    Three threads share the work (auditkeep/threads.py): one reads the events' JSON and the columns the ledger
    and report need from the database, this one takes those in, and one hashes and deflates the JSON into
    the zip.
    """
    sink = _Sink()
    digests: dict[str, str] = {}
    ledger = Ledger()
    summary = Summary()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=_LEVEL) as zf:
        sha = hashlib.sha256()
        # force_zip64: the entry's size is unknown when its header is written, and may pass 4 GiB.
        with zf.open(_entry(EVENTS, plan), "w", force_zip64=True) as out:
            _deflate_fast(out)

            def write(data: bytes) -> None:
                sha.update(data)
                out.write(data)

            writer: WriteBehind[bytes] = WriteBehind(write)
            try:
                writer.put(b'{"query":' + orjson.dumps(plan.statement) + b"}\n")
                q = LogQuery(org_id=plan.org_id, start=plan.request.start, end=plan.request.end, integrity=True,
                             filters=plan.request.filters, max_seq=plan.after.tree_size)
                fromhex = bytes.fromhex
                for rows in read_ahead(iter_bundle_rows(reader or storage, q)):
                    if not rows:
                        continue
                    texts, seqs, prevs, hashes, actions, emails, user_ids, statuses, supports, days = zip(
                        *rows, strict=True)
                    ledger.extend(seqs, fromhex("".join(prevs)), fromhex("".join(hashes)))
                    summary.add_columns(texts, actions=actions, emails=emails, user_ids=user_ids, statuses=statuses,
                                        supports=supports, days=days)
                    writer.put(("\n".join(texts) + "\n").encode())
                    yield sink.drain()
            finally:
                writer.close()
        digests[EVENTS] = sha.hexdigest()
        proofs = _proofs(storage, plan, ledger, reader or storage)
        for name, data in _documents(storage, plan, ledger, summary, proofs):
            digests[name] = hashlib.sha256(data).hexdigest()
            zf.writestr(_entry(name, plan), data)
            yield sink.drain()
        manifest = orjson.dumps(_manifest(plan, ledger, summary, digests), option=orjson.OPT_INDENT_2)
        zf.writestr(_entry(MANIFEST, plan), manifest)
    yield sink.drain()


def _deflate_fast(out: IO[bytes]) -> None:
    """Have zipfile's entry writer `out` (opened, nothing written yet) deflate with ISA-L instead of zlib.

    zipfile has no hook for its compressor, so its writer's is replaced; if a later Python renamed the
    attribute, the entry would simply be deflated by zlib as before (still a valid bundle)."""
    if getattr(out, "_compressor", None) is not None:
        out._compressor = isal_zlib.compressobj(_EVENTS_LEVEL, isal_zlib.DEFLATED, -isal_zlib.MAX_WBITS)  # type: ignore[attr-defined]


def _proofs(storage: Storage, plan: BundlePlan, ledger: Ledger, reader: Storage) -> dict[str, Any]:
    size = plan.after.tree_size
    before = plan.before.tree_size if plan.before is not None else 0
    order = ledger.ordered()
    seqs = ledger.seqs
    contiguous = bool(order) and seqs[order[-1]] - seqs[order[0]] + 1 == len(order)
    with reader.read() as conn:
        tree = open_tree(conn, plan.org_id, size)
        proofs: dict[str, Any] = {"tree_size": size, "range": None, "inclusion": []}
        if contiguous:
            left, right = range_nodes(tree, seqs[order[0]], seqs[order[-1]], size)
            proofs["range"] = {"first_seq": seqs[order[0]], "last_seq": seqs[order[-1]], "left": left,
                               "right": right}
        else:
            proofs["inclusion"] = [{"seq": p.seq, "audit_path": p.audit_path}
                                   for p in inclusion_proofs(tree, [seqs[i] for i in order], size)]
        proofs["consistency"] = {"first": before, "second": size,
                                 "proof": [h.hex() for h in tree.consistency_proof(before, size)]}
    keep_nodes(storage, plan.org_id, tree)
    return proofs


def _documents(storage: Storage, plan: BundlePlan, ledger: Ledger, summary: Summary,
               proofs: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
    checkpoints = {"before": plan.before.model_dump() if plan.before else None, "after": plan.after.model_dump()}
    yield CHECKPOINTS, orjson.dumps(checkpoints, option=orjson.OPT_INDENT_2)
    yield PROOFS, orjson.dumps(proofs)
    yield PUBLIC_KEY, checkpointing.public_key_document(storage)
    yield README, files("auditkeep.evidence").joinpath("README.txt").read_bytes()
    # What the server checks here, without recomputing event hashes (verify-bundle does that).
    keys = checkpointing.public_keys(storage)
    order = ledger.ordered()
    links = link_failures(ledger, order, filtered=plan.statement["filtered"])
    proven = proof_failures(ledger, order, proofs, plan.before, plan.after)
    signed = all(verify_with_ring(cp, keys) for cp in (plan.before, plan.after) if cp is not None)
    checks = [
        ("signatures of the checkpoints before and after the range (Ed25519, the public key in the bundle)", signed),
        ("every event's chain hash is in the after checkpoint's Merkle tree (range or inclusion proofs), and "
         "the before checkpoint's tree is a prefix of it (consistency proof)", not proven),
        ("each event's prev_hash is the hash of the event before it"
         + ("" if plan.statement["filtered"] else ", and no seq of the range is missing"), not links),
    ]
    yield REPORT, render_report(summary, manifest=_manifest(plan, ledger, summary, {}), checks=checks,
                                checkpoints=checkpoints)


def _manifest(plan: BundlePlan, ledger: Ledger, summary: Summary, digests: dict[str, str]) -> dict[str, Any]:
    seqs = ledger.seqs
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "organization": plan.org_name,
        "query": plan.statement,
        "counts": {"events": len(seqs), "failures": summary.failures, "support_user_events": summary.support,
                   "actions": len(summary.by_action), "actors": len(summary.by_actor), "days": len(summary.by_day)},
        "first_seq": min(seqs) if seqs else None, "last_seq": max(seqs) if seqs else None,
        "checkpoints": {"before": plan.before.tree_size if plan.before else 0, "after": plan.after.tree_size},
        "files": digests, "auditkeep_version": __version__, "created_at": plan.created_at,
    }
