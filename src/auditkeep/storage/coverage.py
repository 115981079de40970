"""Whether a time-ranged read leaves out stored events whose seqs lie inside the span it returns: the
`filtered` flag of an export's query statement (api/log_responses.py, docs/integrity.md §6).

A client may back-date an event (its `timestamp` is its own), so a time range can skip a seq that lies
between two it returns. The answer is read from positive evidence, events that exist and fall outside the
range, never from seqs that are merely absent: an event deleted from the database must not turn an
export into one whose gaps are "expected".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from auditkeep.storage.queries import LogQuery, select_sql

if TYPE_CHECKING:
    from auditkeep.storage.base import Storage


def range_skips_inside(storage: Storage, org_id: int, start: str | None, end: str | None, max_seq: int) -> bool:
    """True when some stored event with seq <= `max_seq` lies outside `[start, end)` while its seq lies
    between the lowest and highest seq of the events inside it.

    Two index-only passes, one over the range (timestamp index) and one over its seq span (primary key).
    """
    if start is None and end is None:
        return False  # every event up to the snapshot is in the range
    walk = LogQuery(org_id=org_id, start=start, end=end, max_seq=max_seq, driver="")
    inner, params = select_sql(storage, walk, "seq")
    mark = "?" if storage.dialect == "sqlite" else "%s"
    with storage.read() as conn:
        row = conn.exec_driver_sql(f"SELECT count(*), min(seq), max(seq) FROM ({inner}) AS w", params).one()
        inside, low, high = int(row[0]), row[1], row[2]
        if inside == 0 or high - low + 1 == inside:
            return False
        stored = conn.exec_driver_sql(
            f"SELECT count(*) FROM events WHERE org_id = {mark} AND seq >= {mark} AND seq <= {mark}",
            (org_id, low, high),
        ).scalar_one()
    return int(stored) > inside
