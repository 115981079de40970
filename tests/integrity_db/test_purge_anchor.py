"""After a retention purge anchored with `anchor_before_purge`, the kept events still verify, Merkle roots
and checkpoints included; tampering with them is still caught (issue #3 with issue #4's purge)."""

from __future__ import annotations

import pytest

from auditkeep.errors import ChainBrokenError
from auditkeep.ingest.checkpointing import anchor_before_purge, make_checkpoint
from auditkeep.ingest.verification import verify_org
from auditkeep.integrity.merkle import CompactRange
from auditkeep.storage import Storage
from auditkeep.storage.events import get_head
from auditkeep.storage.retention import purge_org
from tests.conftest import Tenant
from tests.integrity_db._tamper import seed, seed_purgeable, tampering, update_columns

CUTOFF = "2024-05-01T12:00:06.000000Z"  # seed()'s events 0..5 (seq 1..6) are older


@pytest.mark.parametrize("workers", [1, 2], ids=["serial", "parallel"])
def test_purged_prefix_with_anchor_still_verifies_roots(storage: Storage, tenant: Tenant, workers: int) -> None:
    org_id = tenant.org.id
    seed_purgeable(storage, org_id, 10)
    early = make_checkpoint(storage, org_id)  # tree size 10, its audit event is seq 11
    result = purge_org(storage, org_id, CUTOFF, before_delete=lambda last: anchor_before_purge(storage, org_id, last))
    assert (result.first_seq, result.last_seq) == (1, 6)
    seed(storage, org_id, 4, start=10)
    report = verify_org(storage, org_id, workers=workers)
    assert report.ok, report.summary()
    assert report.first_seq == 7 and report.checkpoints_checked >= 2  # the anchor's and the early one
    head = get_head(storage, org_id)
    assert report.report.head.root_hash == CompactRange.from_text(head.seq, head.merkle_frontier).root().hex()
    assert early.tree_size == 10

    with tampering(storage) as conn:
        update_columns(conn, storage, org_id, 8, {"action": "rewritten"})
    broken = verify_org(storage, org_id, workers=workers).report.broken
    assert broken is not None and broken.seq == 8


def test_anchor_refuses_to_cover_a_broken_prefix(storage: Storage, tenant: Tenant) -> None:
    seed(storage, tenant.org.id, 6)
    with tampering(storage) as conn:
        update_columns(conn, storage, tenant.org.id, 2, {"status": "failure"})
    with pytest.raises(ChainBrokenError) as caught:
        anchor_before_purge(storage, tenant.org.id, 4)
    assert caught.value.seq == 2
