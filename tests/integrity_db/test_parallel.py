"""The walk split across processes by seq range reports exactly what the one-process walk reports (issue #3):
the same first bad seq, kind and reason wherever a tampering falls relative to the range boundaries, and
the same chain heads and Merkle roots at every checkpoint size, on both backends."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from auditkeep.ingest import checkpointing, segments, verification
from auditkeep.ingest.checkpointing import anchor_before_purge, make_checkpoint
from auditkeep.ingest.verification import verify_org
from auditkeep.integrity.checkpoints import sign_checkpoint
from auditkeep.integrity.verify import BreakKind
from auditkeep.schemas.audit_logs import LOG_FIELDS
from auditkeep.storage import Storage
from auditkeep.storage.retention import purge_org
from auditkeep.storage.types import format_timestamp
from tests.conftest import Tenant
from tests.integrity_db._tamper import run, seed, seed_purgeable, stored_row, tampering, update_columns

N = 12  # 2 workers: seq 1..6 and 7..12; 3 workers: 1..4, 5..8, 9..12

TAMPERINGS: dict[str, dict[str, Any] | None] = {
    "hash": {"hash": "f" * 64},
    "prev_hash": {"prev_hash": "e" * 64},
    "prev_hash_malformed": {"prev_hash": "not hex"},
    "field_nulled": {"user_email": None},
    "deleted": None,
}


@pytest.mark.parametrize("seq", [1, 6, 7, 9])
@pytest.mark.parametrize("tampering_name", list(TAMPERINGS))
def test_split_walk_names_the_same_break_as_the_one_process_walk(
    storage: Storage, tenant: Tenant, seq: int, tampering_name: str
) -> None:
    """The first seq and both sides of range boundaries: the same report, break reason included."""
    org_id = tenant.org.id
    seed(storage, org_id, N)
    values = TAMPERINGS[tampering_name]
    with tampering(storage) as conn:
        if values is None:
            run(conn, storage, "DELETE FROM events WHERE org_id = ? AND seq = ?", (org_id, seq))
        else:
            update_columns(conn, storage, org_id, seq, values)
    serial = verify_org(storage, org_id, workers=1).report
    assert serial.broken is not None
    assert serial.broken.seq == seq
    for workers in (2, 3):
        assert verify_org(storage, org_id, workers=workers).report == serial, workers


def test_checkpoints_inside_every_range_are_compared_at_their_size(storage: Storage, tenant: Tenant) -> None:
    """Stored checkpoints at many sizes verify, with the same final root; a customer's checkpoint with a
    wrong root inside the last range is a checkpoint_mismatch at its size however the walk is split."""
    org_id = tenant.org.id
    for i in range(6):  # checkpoints at sizes 3, 7, 11, 15, 19, 23 (each adds its own self-audit event)
        seed(storage, org_id, 3, start=3 * i)
        make_checkpoint(storage, org_id)
    serial = verify_org(storage, org_id, workers=1)
    assert serial.ok, serial.summary()
    assert serial.checkpoints_checked == 6
    for workers in (2, 3, 5):
        split = verify_org(storage, org_id, workers=workers)
        assert split.report == serial.report, workers
        assert split.checkpoints_checked == 6

    real = checkpointing.list_checkpoints(storage, org_id, min_size=19, max_size=19)[0]
    forged = sign_checkpoint(checkpointing.signing_key(storage), org=real.org, tree_size=real.tree_size,
                             root_hash="ab" * 32, chain_head=real.chain_head)
    for workers in (1, 2, 3, 5):
        broken = verify_org(storage, org_id, workers=workers, checkpoint=forged).report.broken
        assert broken is not None
        assert (broken.seq, broken.kind) == (19, BreakKind.CHECKPOINT_MISMATCH), workers
        assert broken.reason.startswith("Merkle root at tree size 19 differs"), workers


def test_split_walk_after_an_anchored_purge_joins_onto_the_stored_compact_range(
    storage: Storage, tenant: Tenant
) -> None:
    """The first range starts from the anchor's compact range (tree size 6), not from leaf 0."""
    org_id = tenant.org.id
    seed_purgeable(storage, org_id, 10)
    make_checkpoint(storage, org_id)  # tree size 10
    purge_org(storage, org_id, "2024-05-01T12:00:06.000000Z",
              before_delete=lambda last: anchor_before_purge(storage, org_id, last))
    seed(storage, org_id, 9, start=10)
    make_checkpoint(storage, org_id)
    serial = verify_org(storage, org_id, workers=1)
    assert serial.ok and serial.first_seq == 7, serial.summary()
    for workers in (2, 3):
        assert verify_org(storage, org_id, workers=workers).report == serial.report, workers
    with tampering(storage) as conn:
        update_columns(conn, storage, org_id, 15, {"user_email": "mallory@example.com"})
    serial_broken = verify_org(storage, org_id, workers=1).report
    assert serial_broken.broken is not None and serial_broken.broken.seq == 15
    assert verify_org(storage, org_id, workers=3).report == serial_broken


@pytest.mark.parametrize("moment", [
    datetime(2024, 5, 1, 12, 0, 6, 7, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=-5))),
    datetime(2, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=1, minutes=30))),
])
def test_worker_timestamp_text_is_the_api_text(moment: datetime) -> None:
    """The worker formats PostgreSQL's timestamps itself (no SQLAlchemy import): exactly as the API does."""
    assert segments.api_timestamp(moment) == format_timestamp(moment)


def _rewrite_seq_9_with_orjson_hash(
    storage: Storage, org_id: int, columns: dict[str, Any], *, payload_prefix: str = ""
) -> str:
    """Seed N events, then rewrite seq 9's `columns` (and its payload text, prefixed) and its hash, the hash
    recomputed over orjson's sorted output with the payload text copied verbatim, as a forger who skipped
    JCS would. Returns the stored payload text."""
    seed(storage, org_id, N)
    with storage.read() as conn:
        row = stored_row(conn, storage, org_id, 9)
    text = payload_prefix + row["payload"]
    log = {name: row[name] for name in LOG_FIELDS}
    log.update(columns, payload=orjson.Fragment(text),
               timestamp=row["timestamp"] if isinstance(row["timestamp"], str) else format_timestamp(row["timestamp"]),
               is_support_user=bool(row["is_support_user"]))
    forged = orjson.dumps({**log, "seq": 9}, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(bytes.fromhex(row["prev_hash"]) + forged).hexdigest()
    with tampering(storage) as conn:
        update_columns(conn, storage, org_id, 9, {**columns, "payload": text, "hash": digest})
    return text


@pytest.mark.parametrize(("value", "kind"), [
    (2**60, BreakKind.MALFORMED),  # JCS has no form for it (beyond ±(2**53 - 1))
    # JCS writes 10000000000000000000, orjson 1e+19. SQLite keeps this REAL; PostgreSQL's bigint column cannot.
    pytest.param(1e19, BreakKind.HASH_MISMATCH, marks=pytest.mark.sqlite_only),
])
def test_a_hash_over_orjson_bytes_instead_of_jcs_is_caught_by_both_walks(
    storage: Storage, tenant: Tenant, value: float, kind: BreakKind
) -> None:
    """The split walk's fast path is exact: a row whose hash was recomputed over orjson's output, where
    that differs from JCS, does not pass there while failing in the one-process walk."""
    org_id = tenant.org.id
    _rewrite_seq_9_with_orjson_hash(storage, org_id, {"object_id": value})
    serial = verify_org(storage, org_id, workers=1).report
    assert serial.broken is not None and (serial.broken.seq, serial.broken.kind) == (9, kind)
    assert verify_org(storage, org_id, workers=2).report == serial


def test_a_payload_stored_out_of_canonical_form_is_hashed_as_its_value_by_both_walks(
    storage: Storage, tenant: Tenant
) -> None:
    """A payload rewritten as other text for the same or another value, with the hash recomputed over that
    text, fails at its seq: verification hashes what the API returns, as verify-export does."""
    org_id = tenant.org.id
    text = _rewrite_seq_9_with_orjson_hash(storage, org_id, {}, payload_prefix=" ")  # same value, other text
    with storage.read() as conn:
        assert stored_row(conn, storage, org_id, 9)["payload"] == text  # kept verbatim by both backends
    serial = verify_org(storage, org_id, workers=1).report
    assert serial.broken is not None and (serial.broken.seq, serial.broken.kind) == (9, BreakKind.HASH_MISMATCH)
    assert verify_org(storage, org_id, workers=2).report == serial


def test_a_worker_that_fails_is_an_error_naming_its_range(storage: Storage, tenant: Tenant) -> None:
    """A worker that cannot read its range (here: no such database) fails the walk loudly, never as ok."""
    seed(storage, tenant.org.id, N)
    plan = verification._Plan(tenant.org.id, 1, N, "0" * 64, None, [])
    target = "/nonexistent-auditkeep-dir/missing.db" if storage.dialect == "sqlite" else "host=/nonexistent"
    with pytest.raises(RuntimeError, match=r"verification worker for seq 1\.\.6 failed"):
        verification._walk_parallel(storage, plan, 2, target)
