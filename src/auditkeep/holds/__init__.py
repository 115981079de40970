"""Legal holds (issue #12): a hold keeps the events it covers from retention and erasure until released.

`holds_covering` is what any code about to delete or rewrite events asks first; `create` and `release`
record a `hold.create` / `hold.release` event in the organization's log.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from auditkeep.holds.service import create, public, release
from auditkeep.storage import Storage
from auditkeep.storage import holds as store

__all__ = ["create", "holds_covering", "public", "release"]


def holds_covering(conn: sa.Connection, storage: Storage, org_id: int, seqs: Sequence[int]) -> dict[int, list[str]]:
    """For the given seqs of organization `org_id`, {seq: [ids of the active holds that cover it]}; only
    held seqs appear. Run it in the transaction that deletes or rewrites them, so a hold committed
    meanwhile is seen (on PostgreSQL, lock the organization's chain_heads row first, as a hold's insert
    does: `storage.holds.insert`).

    Example: `holds_covering(conn, storage, org.id, [1, 2, 3])` -> `{2: ["0193…"]}`
    """
    del storage  # part of the agreed interface; the dialect comes with the connection
    return store.covering(conn, org_id, seqs)
