"""Ingest inside a server process: one batch at a time.

Validation is pure Python (one core, the GIL) and writes serialize in the database anyway, so a second
batch in flight in the same process gains nothing and holds ~25 MB more of a 5,000-event batch's objects.
Requests waiting for the slot hold only their bodies, and no thread.

Measured, and rejected: two stages (validate batch n+1 while batch n is written), on the theory that
sqlite3 releases the GIL inside every step. Through the real server, 300,000 events, one worker, three
interleaved pairs: 19,970 / 19,107 / 15,029 events/s one at a time, 19,241 / 14,423 / 9,145 in two stages,
with peak RSS 175-179 MB against 200-203 MB. The writer gives the GIL back at every row and then waits to
get it back from the validating thread (most likely the GIL's convoy effect): the overlap cost more than it saved.
Parallel ingest is a matter of processes (`auditkeep serve --workers N`, docs/architecture.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar

from auditkeep.ingest.service import Recorded, record_batch
from auditkeep.ingest.validation import parse_events
from auditkeep.storage import Storage

# One slot per event loop (a server process has one), made on first use like anyio's own thread limiter.
_SLOT: RunVar[CapacityLimiter] = RunVar("auditkeep_ingest_slot")


def _slot() -> CapacityLimiter:
    try:
        return _SLOT.get()
    except LookupError:
        slot = CapacityLimiter(1)
        _SLOT.set(slot)
        return slot


def _ingest(storage: Storage, org_id: int, body: bytes) -> Recorded:
    return record_batch(storage, org_id, parse_events(body, datetime.now(UTC)))


async def ingest_body(storage: Storage, org_id: int, body: bytes) -> Recorded:
    """Validate and record one POST body, all or nothing; returns the events' uuids in input order and
    how many were new.

    Raises what `parse_events` raises (nothing is written then) and what `record_events` raises.
    """
    # The slot is the thread's own limiter, not the default thread pool's: concurrent reads can hold every
    # one of that pool's 40 tokens, and a batch waited behind them (bench/load.py, docs/benchmarks.md).
    return await anyio.to_thread.run_sync(partial(_ingest, storage, org_id, body), limiter=_slot())
