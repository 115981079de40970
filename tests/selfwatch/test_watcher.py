"""The self-watch over a real database (both backends): incremental verification from a durable position,
checkpoints, the scheduled full verify, failures recorded once, recovery, the lease and /metrics."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from auditkeep.ingest.checkpointing import make_checkpoint, signing_key
from auditkeep.integrity.checkpoints import sign_checkpoint
from auditkeep.integrity.merkle import CompactRange
from auditkeep.selfwatch.watcher import FAILED, RECOVERED, Watcher
from auditkeep.storage import Storage
from auditkeep.storage import integrity as records
from auditkeep.storage import selfwatch as store
from auditkeep.storage.events import iter_chain
from auditkeep.storage.tables import integrity_watch
from tests.conftest import Tenant, make_tenant
from tests.integrity_db._tamper import run, seed, stored_row, tampering, update_columns

HOUR = 3600.0


def _watcher(storage: Storage, *, interval: float = HOUR, owner: str = "test-node") -> Watcher:
    return Watcher(storage, storage.settings.model_copy(update={"verify_interval": interval}), owner=owner)


def _row(storage: Storage, org_id: int) -> store.WatchRow:
    with storage.read() as conn:
        row = store.get(conn, org_id)
    assert row is not None
    return row


def _events(storage: Storage, org_id: int, action: str) -> list[dict[str, Any]]:
    return [e for e in iter_chain(storage, org_id) if e["action"] == action]


def _head(storage: Storage, org_id: int) -> records.HeadState:
    with storage.read() as conn:
        return records.read_head(conn, org_id)


def test_new_events_are_verified_once_from_a_durable_position(storage: Storage, tenant: Tenant) -> None:
    """The first pass verifies the log so far; after a restart, only the events added since are hashed."""
    org_id = tenant.org.id
    seed(storage, org_id, 30)
    first = _watcher(storage)
    assert first.watch(org_id) == 30
    head = _head(storage, org_id)
    row = _row(storage, org_id)
    assert (row.verified_seq, row.verified_hash) == (30, head.hash)
    assert row.merkle_frontier == head.merkle_frontier
    assert row.failures == []
    seed(storage, org_id, 7, start=30)
    first.stop()  # gives its lease back, as `serve` does on shutdown
    restarted = _watcher(storage, owner="another-node")
    assert restarted.watch(org_id) == 7
    assert restarted.watch(org_id) == 0
    assert _row(storage, org_id).verified_seq == 37
    assert _events(storage, org_id, FAILED) == []


def test_an_edited_row_ahead_of_the_position_is_recorded_once(storage: Storage, tenant: Tenant) -> None:
    """An event edited before the watcher reached it: one integrity.verify_failed naming its seq and kind,
    not one a pass."""
    org_id = tenant.org.id
    seed(storage, org_id, 20)
    watcher = _watcher(storage)
    watcher.watch(org_id)
    seed(storage, org_id, 10, start=20)
    with tampering(storage) as conn:
        update_columns(conn, storage, org_id, 25, {"log_entry": "nothing to see"})
    watcher.watch(org_id)
    seed(storage, org_id, 3, start=30)
    watcher.watch(org_id)
    watcher.watch(org_id)
    failed = _events(storage, org_id, FAILED)
    assert len(failed) == 1
    assert failed[0]["status"] == "failure"
    assert failed[0]["payload"] == {"seq": 25, "kind": "hash_mismatch", "check": "incremental",
                                    "reason": "hash does not match the event's content"}
    row = _row(storage, org_id)
    assert row.verified_seq == 24
    assert [(f["seq"], f["kind"]) for f in row.failures] == [(25, "hash_mismatch")]


def test_the_scheduled_full_verify_finds_an_edit_behind_the_position_and_a_restore_clears_it(
    own_storage: Storage
) -> None:
    """Only the full verify sees an edit to an event already verified; once the row is restored, the next
    full verify clears the failure (integrity.verify_recovered) and the watcher starts over. (A database of
    its own: catch_up walks every organization, and the session's holds ones corrupted on purpose.)"""
    storage = own_storage
    org_id = make_tenant(storage).org.id
    seed(storage, org_id, 20)
    _watcher(storage).watch(org_id)
    with storage.read() as conn:
        original = stored_row(conn, storage, org_id, 5)["log_entry"]
    with tampering(storage) as conn:
        update_columns(conn, storage, org_id, 5, {"log_entry": "rewritten"})
    assert _watcher(storage).watch(org_id) == 0  # incremental: nothing new; the full verify is not due
    assert _events(storage, org_id, FAILED) == []
    due = _watcher(storage, interval=0.001)
    due.watch(org_id)
    due.watch(org_id)
    failed = _events(storage, org_id, FAILED)
    assert [(e["payload"]["seq"], e["payload"]["kind"], e["payload"]["check"]) for e in failed] == [
        (5, "hash_mismatch", "full")]
    with tampering(storage) as conn:
        update_columns(conn, storage, org_id, 5, {"log_entry": original})
    due.watch(org_id)
    recovered = _events(storage, org_id, RECOVERED)
    assert len(recovered) == 1
    assert [c["seq"] for c in recovered[0]["payload"]["cleared"]] == [5]
    row = _row(storage, org_id)
    assert (row.failures, row.verified_seq) == ([], 0)  # back to the start of the chain
    _watcher(storage).catch_up()
    assert _row(storage, org_id).verified_seq == _head(storage, org_id).seq
    assert len(_events(storage, org_id, FAILED)) == 1


def test_a_new_checkpoint_behind_the_position_is_compared_by_consistency_proof(
    storage: Storage, tenant: Tenant
) -> None:
    """An honest checkpoint passes; one signed by this server over another root at its size fails as a
    checkpoint_mismatch at that size."""
    org_id = tenant.org.id
    seed(storage, org_id, 12)
    make_checkpoint(storage, org_id)  # at 12; its self-audit event is seq 13
    seed(storage, org_id, 5, start=12)
    watcher = _watcher(storage)
    watcher.watch(org_id)
    assert _row(storage, org_id).checkpoint_size == 12
    assert _row(storage, org_id).failures == []
    # A checkpoint at 9 (behind the position, 18) with a root that is not the tree's at 9.
    with storage.read() as conn:
        chain_head_9 = dict(records.iter_hashes(conn, org_id, 8, 9))[9]
    wrong = sign_checkpoint(signing_key(storage), org=tenant.org.name, tree_size=9,
                            root_hash=CompactRange().root().hex(), chain_head=chain_head_9)
    with storage.write() as conn:
        # The honest one at 12 goes, so the wrong one at 9 is the latest (what the watcher compares), and
        # the watcher forgets it compared 12, as if the wrong one had come first.
        records.insert_checkpoint(conn, org_id, wrong.model_dump())
        run(conn, storage, "DELETE FROM checkpoints WHERE org_id = ? AND tree_size = 12", (org_id,))
        run(conn, storage, "UPDATE integrity_watch SET checkpoint_size = 0 WHERE id = ?", (org_id,))
    watcher.watch(org_id)
    failed = _events(storage, org_id, FAILED)
    assert [(e["payload"]["seq"], e["payload"]["kind"], e["payload"]["check"]) for e in failed] == [
        (9, "checkpoint_mismatch", "checkpoint")]
    assert failed[0]["payload"]["reason"].startswith("Merkle root at tree size 9 differs from the checkpoint")


def test_a_checkpoint_with_an_invalid_signature_fails(storage: Storage, tenant: Tenant) -> None:
    """A checkpoint row naming this server's key whose signature does not verify: somebody wrote it."""
    org_id = tenant.org.id
    seed(storage, org_id, 6)
    _watcher(storage).watch(org_id)
    head = _head(storage, org_id)
    forged = sign_checkpoint(signing_key(storage), org=tenant.org.name, tree_size=head.seq,
                             root_hash=CompactRange.from_text(head.seq, head.merkle_frontier).root().hex(),
                             chain_head=head.hash).model_copy(update={"signature": "00" * 64})
    with storage.write() as conn:
        records.insert_checkpoint(conn, org_id, forged.model_dump())
    _watcher(storage).watch(org_id)
    failed = _events(storage, org_id, FAILED)
    assert [(e["payload"]["seq"], e["payload"]["kind"]) for e in failed] == [(6, "checkpoint_mismatch")]
    assert failed[0]["payload"]["reason"] == "a stored checkpoint at tree size 6 has an invalid signature"


def test_one_node_at_a_time_watches_an_organization(storage: Storage, tenant: Tenant) -> None:
    """While one watcher holds an organization's lease, another verifies nothing of it."""
    org_id = tenant.org.id
    seed(storage, org_id, 5)
    first, second = _watcher(storage, owner="node-a"), _watcher(storage, owner="node-b")
    assert first.watch(org_id) == 5
    seed(storage, org_id, 5, start=5)
    assert second.watch(org_id) == 0
    assert _row(storage, org_id).lease_owner == "node-a"
    first.stop()
    assert second.watch(org_id) == 5


def test_metrics_report_each_organization(app_client: TestClient, storage: Storage, tenant: Tenant) -> None:
    """auditkeep_integrity_ok{org} is 1 while the log verifies and 0 after a failure."""
    org_id = tenant.org.id
    seed(storage, org_id, 4)
    watcher = _watcher(storage)
    watcher.watch(org_id)
    line = f'auditkeep_integrity_ok{{org="{tenant.org.name}"}}'
    assert f"{line} 1.0" in app_client.get("/metrics").text.splitlines()
    seed(storage, org_id, 2, start=4)
    with tampering(storage) as conn:
        update_columns(conn, storage, org_id, 6, {"status": "success!"})
    watcher.watch(org_id)
    assert f"{line} 0.0" in app_client.get("/metrics").text.splitlines()
    assert _row(storage, org_id).failures[0]["at"] <= datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_pass_visits_only_organizations_with_work(storage: Storage, tenant: Tenant) -> None:
    """due_orgs: a new organization, then nothing once verified, then new events or a new checkpoint; never
    one whose lease another node holds; and every organization once its full verify is due."""
    org_id = tenant.org.id
    seed(storage, org_id, 3)

    def due(owner: str = "node-a", interval: float = HOUR) -> bool:
        with storage.read() as conn:
            return org_id in {o for o, _ in store.due_orgs(conn, datetime.now(UTC), owner, interval)}

    assert due()
    watcher = _watcher(storage, owner="node-a")
    watcher.watch(org_id)
    assert not due()
    seed(storage, org_id, 1, start=3)
    assert due()
    assert not due("node-b")  # node-a's lease
    watcher.watch(org_id)
    assert not due()
    make_checkpoint(storage, org_id)
    with storage.write() as conn:  # the checkpoint's own self-audit event is already verified: only it is new
        run(conn, storage, "UPDATE integrity_watch SET verified_seq = ?, verified_hash = ?, merkle_frontier = ? "
            "WHERE id = ?", (_head(storage, org_id).seq, _head(storage, org_id).hash,
                             _head(storage, org_id).merkle_frontier, org_id))
    assert due()
    watcher.watch(org_id)
    assert not due()
    assert due(interval=0.001)
    with storage.write() as conn:  # a row edited to put the next full verify off for a year: due at once
        conn.execute(integrity_watch.update().where(integrity_watch.c.id == org_id)
                     .values(full_verified_at=datetime(datetime.now(UTC).year + 1, 1, 1, tzinfo=UTC)))
    assert due()


def test_a_pass_verifies_new_events_before_full_verifies_and_those_most_overdue_first(
    own_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every organization's new events are verified before any full verify runs (a full verify walks a whole
    log, and would hold up the others' new events); the full verifies go most overdue first, and a pass
    spends about a turn on them, leaving the rest to the next pass, which follows without a rest."""
    storage = own_storage
    orgs = [make_tenant(storage).org.id for _ in range(3)]
    for org_id in orgs:
        seed(storage, org_id, 3)
    watcher = _watcher(storage, interval=20.0)
    assert watcher.run_once() == 9
    base = datetime.now(UTC)
    for org_id, ago in zip(orgs, (25, 60, 40), strict=True):  # orgs[1] is the most overdue, then orgs[2]
        with storage.write() as conn:
            conn.execute(integrity_watch.update().where(integrity_watch.c.id == org_id)
                         .values(full_verified_at=base - timedelta(seconds=ago)))
    seed(storage, orgs[0], 2, start=3)
    calls: list[tuple[str, int]] = []
    watch, full = watcher.watch, watcher._full

    def traced_watch(org_id: int, *, full: bool = True) -> int:
        done = watch(org_id, full=full)
        if done:
            calls.append(("new", org_id))
        return done

    def traced_full(org_id: int) -> None:
        calls.append(("full", org_id))
        full(org_id)

    monkeypatch.setattr(watcher, "watch", traced_watch)
    monkeypatch.setattr(watcher, "_full", traced_full)
    monkeypatch.setattr("auditkeep.selfwatch.watcher.TURN_SECONDS", 0.0)  # a turn's time: one full verify
    assert watcher.run_once() == 2
    assert calls == [("new", orgs[0]), ("full", orgs[1])]
    assert watcher._backlog  # two still due: run_forever goes on without resting
    calls.clear()
    watcher.run_once()
    assert calls == [("full", orgs[2])]
    calls.clear()
    watcher.run_once()
    assert calls == [("full", orgs[0])] and not watcher._backlog


def test_a_checkpoint_ahead_of_the_position_is_compared_when_the_walk_reaches_it(
    storage: Storage, tenant: Tenant
) -> None:
    """A signed checkpoint at 8 whose root is not the tree's at 8, stored before the watcher got there:
    checkpoint_mismatch at 8, and the position does not pass the checkpoint's size."""
    org_id = tenant.org.id
    seed(storage, org_id, 10)
    with storage.read() as conn:
        chain_head_8 = dict(records.iter_hashes(conn, org_id, 7, 8))[8]
    wrong = sign_checkpoint(signing_key(storage), org=tenant.org.name, tree_size=8,
                            root_hash=CompactRange().root().hex(), chain_head=chain_head_8)
    with storage.write() as conn:
        records.insert_checkpoint(conn, org_id, wrong.model_dump())
    _watcher(storage).watch(org_id)
    failed = _events(storage, org_id, FAILED)
    assert [(e["payload"]["seq"], e["payload"]["kind"], e["payload"]["check"]) for e in failed] == [
        (8, "checkpoint_mismatch", "checkpoint")]
    assert _row(storage, org_id).verified_seq < 8


def test_the_lease_is_renewed_while_a_full_verify_runs(storage: Storage, tenant: Tenant) -> None:
    """A walk longer than the lease keeps it: renewed every third of its length (here 1 s) until done."""
    org_id = tenant.org.id
    seed(storage, org_id, 2)
    settings = storage.settings.model_copy(update={"self_watch_lease_seconds": 1.0})
    holder, other = Watcher(storage, settings, owner="node-a"), Watcher(storage, settings, owner="node-b")
    holder.watch(org_id)
    done = threading.Event()
    renewer = threading.Thread(target=holder._renew, args=(org_id, done))
    renewer.start()
    try:
        time.sleep(2.5)  # past the lease taken at watch() and any single renewal
        with storage.write() as conn:
            assert not store.acquire(conn, org_id, "node-b", datetime.now(UTC), 1.0)
    finally:
        done.set()
        renewer.join()
    time.sleep(1.1)
    seed(storage, org_id, 1, start=2)
    assert other.watch(org_id) == 1  # renewals stopped: the lease lapsed and node-b took it


def test_a_row_moved_past_the_head_still_shows_though_its_event_cannot_be_appended(own_storage: Storage) -> None:
    """Tampering that puts an event at the seq the next append would take makes the chain refuse the
    integrity.verify_failed event itself; the failure is still kept on the watch row (the metric and the
    console banner read it) instead of the pass failing with it."""
    storage = own_storage
    org_id = make_tenant(storage).org.id
    seed(storage, org_id, 20)
    _watcher(storage).watch(org_id)
    with tampering(storage) as conn:
        update_columns(conn, storage, org_id, 20, {"seq": 21})
    _watcher(storage, interval=0.001).watch(org_id)
    assert [f["check"] for f in _row(storage, org_id).failures] == ["full"]
    # SQLite's UNIQUE (org_id, seq) refuses the append; PostgreSQL's partitioned table cannot hold a unique
    # key without the partition's timestamp, so there the event lands beside the planted row.
    assert len(_events(storage, org_id, FAILED)) == (0 if storage.dialect == "sqlite" else 1)
