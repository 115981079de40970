"""`/api/v1/integrity/*` on both backends (issue #3): public key, checkpoints, proofs checked by an
independent RFC 9162 verifier written here, server-side verification, permissions."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient

from auditkeep.auth.principals import Role, Scope
from auditkeep.ingest.checkpointing import anchor_before_purge
from auditkeep.integrity.checkpoints import load_checkpoint, load_public_key, verify_checkpoint
from auditkeep.storage import Storage
from auditkeep.storage.retention import purge_org
from tests.conftest import Tenant
from tests.integrity_db._tamper import seed, seed_purgeable, tampering, update_columns

# --- an independent verifier (RFC 9162 §2.1.3.2 and §2.1.4.2, docs/integrity.md §3) ----------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return _h(b"\x01" + left + right)


def _mth(leaves: list[bytes]) -> bytes:
    """Merkle tree hash straight from the RFC's recursive definition."""
    if not leaves:
        return _h(b"")
    if len(leaves) == 1:
        return _h(b"\x00" + leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return _node(_mth(leaves[:k]), _mth(leaves[k:]))


def check_inclusion(chain_hash: str, index: int, size: int, path: list[str], root: str) -> bool:
    if index >= size:
        return False
    fn, sn, r = index, size - 1, _h(b"\x00" + bytes.fromhex(chain_hash))
    for p in map(bytes.fromhex, path):
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = _node(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = _node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r.hex() == root


def check_consistency(first: int, second: int, proof: list[str], first_root: str, second_root: str) -> bool:
    path = [bytes.fromhex(p) for p in proof]
    if first == second:
        return not path and first_root == second_root
    if first == 0:
        return not path
    if not path:
        return False
    if first & (first - 1) == 0:
        path.insert(0, bytes.fromhex(first_root))
    fn, sn = first - 1, second - 1
    while fn % 2 == 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr, sr = _node(c, fr), _node(c, sr)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = _node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr.hex() == first_root and sr.hex() == second_root and sn == 0


# --- tests ----------------------------------------------------------------------------------------------


def _logs(client: TestClient, tenant: Tenant) -> list[dict[str, object]]:
    r = client.get("/api/v1/audit_logs?include=integrity&start_date=2000-01-01T00:00:00Z", headers=tenant.headers)
    assert r.status_code == 200
    return sorted(r.json()["logs"], key=lambda log: log["seq"])  # type: ignore[arg-type,return-value]


def test_public_key_document_is_served_exactly_and_verifies_checkpoints(app_client: TestClient, tenant: Tenant) -> None:
    r = app_client.get("/api/v1/integrity/public_key", headers=tenant.headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    key = load_public_key(r.content)
    made = app_client.post("/api/v1/integrity/checkpoints", headers=tenant.headers)
    assert made.status_code == 201
    checkpoint = load_checkpoint(made.content)
    assert verify_checkpoint(checkpoint, key)
    assert checkpoint.org == tenant.org.name


def test_checkpoints_latest_and_ranges(app_client: TestClient, storage: Storage, tenant: Tenant) -> None:
    h = tenant.headers
    assert app_client.get("/api/v1/integrity/checkpoints", headers=h).json() == {"checkpoints": []}
    seed(storage, tenant.org.id, 3)
    first = app_client.post("/api/v1/integrity/checkpoints", headers=h).json()
    seed(storage, tenant.org.id, 4, start=3)
    second = app_client.post("/api/v1/integrity/checkpoints", headers=h).json()
    assert (first["tree_size"], second["tree_size"]) == (3, 8)  # 3 events; + its audit event + 4
    assert app_client.get("/api/v1/integrity/checkpoints", headers=h).json() == {"checkpoints": [second]}
    ranged = app_client.get("/api/v1/integrity/checkpoints?min_tree_size=0", headers=h).json()["checkpoints"]
    assert ranged == [first, second]
    assert app_client.get("/api/v1/integrity/checkpoints?max_tree_size=7", headers=h).json() == {"checkpoints": [first]}
    since = app_client.get("/api/v1/integrity/checkpoints", params={"start_date": second["issued_at"]}, headers=h)
    assert since.json() == {"checkpoints": [second]}
    until = app_client.get("/api/v1/integrity/checkpoints", params={"end_date": second["issued_at"]}, headers=h)
    assert until.json() == {"checkpoints": [first]}
    assert app_client.get("/api/v1/integrity/checkpoints?limit=0", headers=h).status_code == 422


def test_inclusion_proofs_verify_independently_for_every_event(
    app_client: TestClient, storage: Storage, tenant: Tenant
) -> None:
    seed(storage, tenant.org.id, 12)
    checkpoint = app_client.post("/api/v1/integrity/checkpoints", headers=tenant.headers).json()
    logs = _logs(app_client, tenant)
    hashes = [bytes.fromhex(str(log["hash"])) for log in logs]
    assert _mth(hashes[: checkpoint["tree_size"]]).hex() == checkpoint["root_hash"]
    for log in logs[: checkpoint["tree_size"]]:
        r = app_client.get("/api/v1/integrity/proofs/inclusion", params={"event_uuid": log["event_uuid"]},
                           headers=tenant.headers)
        assert r.status_code == 200, r.text
        proof = r.json()
        assert proof["tree_size"] == checkpoint["tree_size"] and proof["leaf_index"] == log["seq"] - 1  # type: ignore[operator]
        assert proof["hash"] == log["hash"]
        assert proof["checkpoint"] == checkpoint
        assert check_inclusion(str(log["hash"]), proof["leaf_index"], proof["tree_size"], proof["audit_path"],
                               checkpoint["root_hash"])
        assert not check_inclusion("0" * 64, proof["leaf_index"], proof["tree_size"], proof["audit_path"],
                                   checkpoint["root_hash"])
    # An explicit smaller tree size: the root is that tree's.
    r = app_client.get("/api/v1/integrity/proofs/inclusion", params={"event_uuid": logs[4]["event_uuid"],
                       "tree_size": 7}, headers=tenant.headers).json()
    assert r["root_hash"] == _mth(hashes[:7]).hex()
    assert check_inclusion(str(logs[4]["hash"]), 4, 7, r["audit_path"], r["root_hash"])


def test_consistency_proofs_verify_independently(app_client: TestClient, storage: Storage, tenant: Tenant) -> None:
    seed(storage, tenant.org.id, 17)
    hashes = [bytes.fromhex(str(log["hash"])) for log in _logs(app_client, tenant)][:17]
    for first, second in [(0, 5), (1, 2), (3, 7), (4, 8), (5, 17), (8, 16), (13, 17), (17, 17)]:
        r = app_client.get("/api/v1/integrity/proofs/consistency", params={"first": first, "second": second},
                           headers=tenant.headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["first_root"] == _mth(hashes[:first]).hex()
        assert body["second_root"] == _mth(hashes[:second]).hex()
        assert check_consistency(first, second, body["proof"], body["first_root"], body["second_root"])
        if 0 < first < second:
            assert not check_consistency(first, second, body["proof"], _mth(hashes[1 : first + 1]).hex(),
                                         body["second_root"])


@pytest.mark.parametrize(("params", "status"), [
    ({"first": 5, "second": 3}, 422), ({"first": 1, "second": 10_000}, 422), ({"first": -1, "second": 2}, 422),
])
def test_consistency_out_of_range(app_client: TestClient, storage: Storage, tenant: Tenant,
                                  params: dict[str, int], status: int) -> None:
    seed(storage, tenant.org.id, 4)
    r = app_client.get("/api/v1/integrity/proofs/consistency", params=params, headers=tenant.headers)
    assert r.status_code == status


def test_inclusion_errors(app_client: TestClient, storage: Storage, tenant: Tenant) -> None:
    uuids = seed(storage, tenant.org.id, 4)
    h = tenant.headers
    r = app_client.get("/api/v1/integrity/proofs/inclusion", params={"event_uuid": uuids[0]}, headers=h)
    assert r.status_code == 422  # no checkpoint covers it yet
    assert r.json() == {"detail": [{
        "type": "value_error", "loc": ["query", "tree_size"], "input": None,
        "msg": "event seq 1 is not covered by a checkpoint yet: pass tree_size or make a checkpoint"}]}
    r = app_client.get("/api/v1/integrity/proofs/inclusion",
                       params={"event_uuid": "00000000-0000-4000-8000-000000000000", "tree_size": 4}, headers=h)
    assert r.status_code == 404
    r = app_client.get("/api/v1/integrity/proofs/inclusion", params={"event_uuid": uuids[3], "tree_size": 2},
                       headers=h)
    assert r.status_code == 422


def test_proofs_after_an_anchored_purge(app_client: TestClient, storage: Storage, tenant: Tenant) -> None:
    """Seq 1..6 purged behind an anchor: stored events still have inclusion proofs, and consistency proofs
    from tree size 0, 6 (the anchor) or later verify against the roots of the full history; a size inside
    the purged prefix is a 422 that says why."""
    org_id, h = tenant.org.id, tenant.headers
    uuids = seed_purgeable(storage, org_id, 10)
    early = app_client.post("/api/v1/integrity/checkpoints", headers=h).json()  # tree size 10
    by_seq = {log["seq"]: bytes.fromhex(str(log["hash"])) for log in _logs(app_client, tenant)}
    purge_org(storage, org_id, "2024-05-01T12:00:06.000000Z",
              before_delete=lambda last: anchor_before_purge(storage, org_id, last))
    seed(storage, org_id, 5, start=10)
    latest = app_client.post("/api/v1/integrity/checkpoints", headers=h).json()
    kept = _logs(app_client, tenant)
    assert kept[0]["seq"] == 7
    by_seq |= {log["seq"]: bytes.fromhex(str(log["hash"])) for log in kept}
    hashes = [by_seq[seq] for seq in range(1, len(by_seq) + 1)]  # the whole history, purged part included
    assert latest["root_hash"] == _mth(hashes[: latest["tree_size"]]).hex()

    r = app_client.get("/api/v1/integrity/proofs/inclusion", params={"event_uuid": uuids[7]}, headers=h)
    assert r.status_code == 200, r.text
    proof = r.json()
    assert (proof["leaf_index"], proof["tree_size"]) == (7, latest["tree_size"])
    assert proof["root_hash"] == latest["root_hash"]
    assert check_inclusion(proof["hash"], 7, proof["tree_size"], proof["audit_path"], latest["root_hash"])
    for first in (0, 6, early["tree_size"], 12):
        r = app_client.get("/api/v1/integrity/proofs/consistency",
                           params={"first": first, "second": latest["tree_size"]}, headers=h)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["first_root"] == _mth(hashes[:first]).hex() and body["second_root"] == latest["root_hash"]
        assert check_consistency(first, latest["tree_size"], body["proof"], body["first_root"], latest["root_hash"])

    r = app_client.get("/api/v1/integrity/proofs/consistency", params={"first": 3, "second": 10}, headers=h)
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert (error["loc"], error["input"]) == (["query", "first"], 3)
    assert "purge" in error["msg"] and "1..6 were deleted" in error["msg"]
    r = app_client.get("/api/v1/integrity/proofs/inclusion", params={"event_uuid": uuids[2], "tree_size": 10},
                       headers=h)
    assert r.status_code == 404  # the event itself is gone


def test_verify_ok_then_broken_and_self_audited(app_client: TestClient, storage: Storage, tenant: Tenant) -> None:
    seed(storage, tenant.org.id, 6)
    body = app_client.get("/api/v1/integrity/verify", headers=tenant.headers).json()
    assert body["ok"] is True and body["broken"] is None and body["events"] == 6
    with tampering(storage) as conn:
        update_columns(conn, storage, tenant.org.id, 2, {"url": "https://evil.example/"})
    body = app_client.get("/api/v1/integrity/verify", headers=tenant.headers).json()
    assert body["ok"] is False
    assert body["broken"]["seq"] == 2 and body["broken"]["kind"] == "hash_mismatch"
    actions = [log["action"] for log in _logs(app_client, tenant)]
    assert actions.count("integrity.verify") == 2


def test_permissions(app_client: TestClient, tenant: Tenant) -> None:
    _, viewer = tenant.user(Role.VIEWONLY)
    _, writer = tenant.service_account(Scope.WRITE)
    _, reader = tenant.service_account(Scope.READ)
    paths = ["/api/v1/integrity/public_key", "/api/v1/integrity/checkpoints", "/api/v1/integrity/verify"]
    for path in paths:
        assert app_client.get(path).status_code == 401
        assert app_client.get(path, headers={"Authorization": f"Key {writer}"}).status_code == 403
        assert app_client.get(path, headers={"Authorization": f"Key {reader}"}).status_code == 200
    refused = app_client.post("/api/v1/integrity/checkpoints", headers={"Authorization": f"Key {writer}"})
    assert refused.status_code == 403
    # Users other than admins hold no scopes (CONTRACT.md: reading needs admin or audit_logs:read).
    assert app_client.get(paths[0], headers={"Authorization": f"Key {viewer}"}).status_code == 403
