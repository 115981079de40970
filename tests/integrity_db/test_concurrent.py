"""Concurrent ingest, with automatic checkpoints along the way, leaves one chain that verifies (issue #3)."""

from __future__ import annotations

import threading

from auditkeep.ingest.verification import verify_org
from auditkeep.settings import Settings
from auditkeep.storage import Storage, open_storage
from auditkeep.storage import integrity as records
from tests.conftest import make_tenant
from tests.integrity_db._tamper import seed

THREADS, BATCHES, PER_BATCH = 6, 8, 5


def test_threads_ingesting_with_automatic_checkpoints(storage: Storage, settings: Settings) -> None:
    """Six writers on one organization, a checkpoint due every 10 events: one gap-free chain, and every
    automatic checkpoint (made outside the ingest transactions, possibly by two writers at once) verifies."""
    busy = open_storage(storage.url, settings=settings.model_copy(
        update={"database_url": storage.url, "checkpoint_every_events": 10}))
    tenant = make_tenant(busy)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for b in range(BATCHES):
                seed(busy, tenant.org.id, PER_BATCH, start=(n * BATCHES + b) * PER_BATCH)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with busy.read() as conn:
        stored = records.list_checkpoints(conn, tenant.org.id)
    result = verify_org(busy, tenant.org.id, workers=1)
    busy.dispose()
    assert result.ok, result.summary()
    ingested = THREADS * BATCHES * PER_BATCH
    assert result.report.events == ingested + len(stored)  # plus one self-audit event per checkpoint
    assert len(stored) >= ingested // 10 // 2
    assert result.checkpoints_checked == len(stored)
