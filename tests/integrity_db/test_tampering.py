"""Each tampering of the stored log is detected and the first bad seq named, on both backends (issue #3).

Every case runs through the one-process walk and the walk split across two processes by seq range.
"""

from __future__ import annotations

from typing import Any

import pytest

from auditkeep.ingest.checkpointing import make_checkpoint
from auditkeep.ingest.verification import verify_org
from auditkeep.integrity.verify import BreakKind
from auditkeep.storage import Storage
from tests.conftest import Tenant
from tests.integrity_db._tamper import (
    delete_checkpoints,
    rewrite_from,
    run,
    seed,
    swap_rows,
    tampering,
    update_columns,
)

N = 12
WORKERS = pytest.mark.parametrize("workers", [1, 2], ids=["serial", "parallel"])


def _broken(storage: Storage, tenant: Tenant, workers: int, **kwargs: Any) -> tuple[int, BreakKind]:
    result = verify_org(storage, tenant.org.id, workers=workers, **kwargs)
    assert result.report.broken is not None, result.summary()
    return result.report.broken.seq, result.report.broken.kind


@WORKERS
def test_intact_log_verifies_with_its_checkpoints(storage: Storage, tenant: Tenant, workers: int) -> None:
    """An untouched log verifies: every event, the Merkle tree, and the checkpoints signed along the way."""
    seed(storage, tenant.org.id, N)
    make_checkpoint(storage, tenant.org.id)
    seed(storage, tenant.org.id, 5, start=N)
    result = verify_org(storage, tenant.org.id, workers=workers)
    assert result.ok, result.summary()
    assert result.report.events == N + 1 + 5  # the checkpoint's self-audit event is in the log too
    assert result.checkpoints_checked == 1


@WORKERS
@pytest.mark.parametrize(("column", "value"), [("action", "document.delete"), ("payload", '{"n":999}'),
                                               ("user_email", "mallory@example.com")])
def test_one_field_changed_in_place(storage: Storage, tenant: Tenant, workers: int, column: str, value: str) -> None:
    seed(storage, tenant.org.id, N)
    with tampering(storage) as conn:
        update_columns(conn, storage, tenant.org.id, 7, {column: value})
    assert _broken(storage, tenant, workers) == (7, BreakKind.HASH_MISMATCH)


@WORKERS
def test_middle_event_deleted(storage: Storage, tenant: Tenant, workers: int) -> None:
    seed(storage, tenant.org.id, N)
    with tampering(storage) as conn:
        run(conn, storage, "DELETE FROM events WHERE org_id = ? AND seq = ?", (tenant.org.id, 5))
    assert _broken(storage, tenant, workers) == (5, BreakKind.SEQ_GAP)


@WORKERS
def test_two_events_swapped(storage: Storage, tenant: Tenant, workers: int) -> None:
    """Every column but seq exchanged between seq 4 and seq 9: caught at seq 4."""
    seed(storage, tenant.org.id, N)
    with tampering(storage) as conn:
        swap_rows(conn, storage, tenant.org.id, 4, 9)
    seq, kind = _broken(storage, tenant, workers)
    assert seq == 4
    assert kind in {BreakKind.PREV_HASH_MISMATCH, BreakKind.HASH_MISMATCH}


@WORKERS
def test_forged_event_with_chain_recomputed_is_caught_by_the_checkpoint(
    storage: Storage, tenant: Tenant, workers: int
) -> None:
    """A forged event inserted at seq 4 with every later hash (and the head row) recomputed is a valid
    chain; the signed checkpoint at tree size 12 no longer matches its chain head and Merkle root."""
    seed(storage, tenant.org.id, N - 1)
    saved = make_checkpoint(storage, tenant.org.id)  # tree size 11; its self-audit event is seq 12
    assert saved.tree_size == N - 1

    def forge(logs: list[dict[str, Any]]) -> None:
        logs.insert(0, {**logs[0], "event_uuid": "6f0c1c4e-8a7e-4b8e-9a55-2b5bd2d1c0de", "action": "forged"})

    rewrite_from(storage, tenant.org.id, 4, forge)
    assert _broken(storage, tenant, workers) == (N - 1, BreakKind.CHECKPOINT_MISMATCH)
    # With the server's stored checkpoints gone too, the customer's saved copy still catches it.
    delete_checkpoints(storage, tenant.org.id)
    assert verify_org(storage, tenant.org.id, workers=workers).ok
    assert _broken(storage, tenant, workers, checkpoint=saved) == (N - 1, BreakKind.CHECKPOINT_MISMATCH)


@WORKERS
def test_rewrite_without_chain_recompute_names_the_edited_seq_before_the_checkpoint(
    storage: Storage, tenant: Tenant, workers: int
) -> None:
    seed(storage, tenant.org.id, N)
    make_checkpoint(storage, tenant.org.id)
    with tampering(storage) as conn:
        update_columns(conn, storage, tenant.org.id, 3, {"hash": "f" * 64})
    seq, _kind = _broken(storage, tenant, workers)
    assert seq == 3


@WORKERS
def test_newest_events_deleted(storage: Storage, tenant: Tenant, workers: int) -> None:
    """Truncation: caught by the head row; with the head row rewound and the stored checkpoints deleted
    as well, by a checkpoint the customer saved earlier."""
    seed(storage, tenant.org.id, N)
    saved = make_checkpoint(storage, tenant.org.id)  # tree size 12, self-audit event 13
    with tampering(storage) as conn:
        run(conn, storage, "DELETE FROM events WHERE org_id = ? AND seq > ?", (tenant.org.id, 9))
    assert _broken(storage, tenant, workers) == (10, BreakKind.TRUNCATED)

    rewrite_from(storage, tenant.org.id, 10, lambda logs: None)  # rewinds chain_heads to seq 9
    assert _broken(storage, tenant, workers) == (10, BreakKind.TRUNCATED)  # the stored checkpoint
    delete_checkpoints(storage, tenant.org.id)
    assert verify_org(storage, tenant.org.id, workers=workers).ok
    assert _broken(storage, tenant, workers, checkpoint=saved) == (10, BreakKind.TRUNCATED)
