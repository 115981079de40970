"""The Merkle node cache behind proofs (ingest/proofs.py, docs/integrity.md §9): proofs with and without it
are byte-identical, purged prefixes still work, and a tampered cached node only yields proofs that fail
the client's check against a signed checkpoint. The cache height is lowered to 2 (4-leaf subtrees) so
small logs exercise every path."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from auditkeep.ingest import proofs
from auditkeep.ingest.checkpointing import anchor_before_purge, make_checkpoint
from auditkeep.integrity import merkle
from auditkeep.storage import Storage
from auditkeep.storage import integrity as records
from auditkeep.storage.retention import purge_org
from auditkeep.storage.tables import merkle_nodes
from tests.api.test_integrity import check_consistency, check_inclusion
from tests.conftest import Tenant
from tests.integrity_db._tamper import seed, seed_purgeable

CUTOFF = "2024-05-01T12:00:06.000000Z"  # seed()'s events 0..5 (seq 1..6) are older


@pytest.fixture(autouse=True)
def _small_cache_height(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proofs, "NODE_CACHE_HEIGHT", 2)


def _leaves(storage: Storage, org_id: int) -> dict[int, bytes]:
    """seq -> leaf hash of every stored event."""
    with storage.read() as conn:
        return {seq: merkle.leaf_hash(bytes.fromhex(h)) for seq, h in records.iter_hashes(conn, org_id, 0, 10**9)}


def _uuids(storage: Storage, org_id: int) -> dict[int, str]:
    with storage.read() as conn:
        rows = conn.exec_driver_sql(f"SELECT seq, event_uuid FROM events WHERE org_id = {int(org_id)}").all()
    return {int(seq): uuid for seq, uuid in rows}


def _cached(storage: Storage, org_id: int) -> int:
    with storage.read() as conn:
        count: int = conn.execute(sa.select(sa.func.count()).select_from(merkle_nodes)
                                  .where(merkle_nodes.c.org_id == org_id)).scalar_one()
    return count


def _clear(storage: Storage, org_id: int) -> None:
    with storage.write() as conn:
        conn.execute(merkle_nodes.delete().where(merkle_nodes.c.org_id == org_id))


def test_cached_and_uncached_proofs_are_identical(storage: Storage, tenant: Tenant) -> None:
    """Cold cache, warm cache and the in-memory reference give the same roots and proofs."""
    org_id = tenant.org.id
    seed(storage, org_id, 37)
    by_seq, uuids = _leaves(storage, org_id), _uuids(storage, org_id)
    leaves = [by_seq[seq] for seq in range(1, 38)]
    for seq, size in [(1, 1), (1, 37), (3, 4), (5, 8), (9, 13), (16, 16), (17, 33), (30, 37), (37, 37), (12, 20)]:
        _clear(storage, org_id)
        cold = proofs.inclusion(storage, org_id, uuids[seq], size)
        warm = proofs.inclusion(storage, org_id, uuids[seq], size)
        assert cold == warm
        assert cold["root_hash"] == merkle.root(leaves[:size]).hex()
        assert cold["audit_path"] == [h.hex() for h in merkle.inclusion_proof(leaves, seq - 1, size)]
    assert _cached(storage, org_id) > 0
    for first, second in [(0, 5), (1, 2), (3, 7), (4, 8), (5, 17), (8, 16), (13, 37), (16, 32), (37, 37)]:
        _clear(storage, org_id)
        cold = proofs.consistency(storage, org_id, first, second)
        warm = proofs.consistency(storage, org_id, first, second)
        assert cold == warm
        assert cold["proof"] == [h.hex() for h in merkle.consistency_proof(leaves, first, second)]
        assert check_consistency(first, second, cold["proof"], merkle.root(leaves[:first]).hex(),
                                 merkle.root(leaves[:second]).hex())
    # A warm cache filled by other proofs: every perfect subtree of 4 leaves and up inside leaves 0..31
    # (leaves 32..35 are read as the last block, as any subtree of cache height is, without the cache).
    proofs.consistency(storage, org_id, 1, 37)
    assert _cached(storage, org_id) == 8 + 4 + 2 + 1
    for seq in range(1, 38):
        proof = proofs.inclusion(storage, org_id, uuids[seq], 37)
        assert proof["audit_path"] == [h.hex() for h in merkle.inclusion_proof(leaves, seq - 1, 37)]


def test_proofs_after_a_purge_use_the_anchor_not_the_cache(storage: Storage, tenant: Tenant) -> None:
    """Seq 1..6 purged behind an anchor, with nodes cached before and after: the same proofs as the full
    history gives, cold and warm."""
    org_id = tenant.org.id
    seed_purgeable(storage, org_id, 10)
    history = _leaves(storage, org_id)
    proofs.consistency(storage, org_id, 1, 10)  # caches nodes over the soon purged prefix too
    purge_org(storage, org_id, CUTOFF, before_delete=lambda last: anchor_before_purge(storage, org_id, last))
    seed(storage, org_id, 30, start=10)
    history |= _leaves(storage, org_id)
    leaves = [history[seq] for seq in range(1, len(history) + 1)]
    size, uuids = len(leaves), _uuids(storage, org_id)
    assert min(uuids) == 7
    for _round in ("cold", "warm"):
        for seq in (7, 8, 12, 16, 17, 33, size):
            proof = proofs.inclusion(storage, org_id, uuids[seq], size)
            assert proof["root_hash"] == merkle.root(leaves).hex()
            assert proof["audit_path"] == [h.hex() for h in merkle.inclusion_proof(leaves, seq - 1, size)]
        for first in (0, 6, 8, 10, 12, 16, 32):
            body = proofs.consistency(storage, org_id, first, size)
            assert body["first_root"] == merkle.root(leaves[:first]).hex()
            assert body["proof"] == [h.hex() for h in merkle.consistency_proof(leaves, first, size)]
        _clear(storage, org_id)
        proofs.consistency(storage, org_id, 6, size)


def test_a_tampered_cached_node_fails_the_clients_check(storage: Storage, tenant: Tenant) -> None:
    """The cache is a performance aid, checked by the client like any proof: a rewritten node changes the
    proof, which then fails against the signed checkpoint's root."""
    org_id = tenant.org.id
    seed(storage, org_id, 16)
    checkpoint = make_checkpoint(storage, org_id)
    size, uuid = checkpoint.tree_size, _uuids(storage, org_id)[1]
    assert size >= 16
    good = proofs.inclusion(storage, org_id, uuid, size)
    assert check_inclusion(good["hash"], 0, size, good["audit_path"], checkpoint.root_hash)
    with storage.write() as conn:  # subtree (3, 1), leaves 8..15, is leaf 0's sibling at height 3
        changed = conn.execute(merkle_nodes.update().values(hash="ab" * 32).where(
            merkle_nodes.c.org_id == org_id, merkle_nodes.c.height == 3, merkle_nodes.c.node_index == 1)).rowcount
    assert changed == 1
    bad = proofs.inclusion(storage, org_id, uuid, size)
    assert bad["audit_path"][3] == "ab" * 32
    assert not check_inclusion(bad["hash"], 0, size, bad["audit_path"], checkpoint.root_hash)
    _clear(storage, org_id)  # the cache is disposable: rebuilt from the leaves
    assert proofs.inclusion(storage, org_id, uuid, size) == good


def test_concurrent_proofs_share_nodes_without_failing(storage: Storage, tenant: Tenant) -> None:
    """Two proofs storing the same node: insert-or-ignore, the first row stays."""
    org_id = tenant.org.id
    seed(storage, org_id, 40)
    with storage.write() as conn:
        records.insert_merkle_nodes(conn, org_id, [(2, 0, "11" * 32)])
    with storage.write() as conn:
        records.insert_merkle_nodes(conn, org_id, [(2, 0, "22" * 32), (2, 1, "33" * 32)])
    with storage.read() as conn:
        assert records.merkle_node(conn, org_id, 2, 0) == "11" * 32
    _clear(storage, org_id)
    expected = proofs.consistency(storage, org_id, 3, 40)
    _clear(storage, org_id)
    results: list[dict[str, object]] = []
    errors: list[BaseException] = []

    def prove() -> None:
        try:
            results.append(proofs.consistency(storage, org_id, 3, 40))
        except BaseException as exc:  # reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=prove) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [expected] * 4
