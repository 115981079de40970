"""Several nodes (issue #14): two `auditkeep serve` processes on separate ports, as separate hosts would be,
sharing one PostgreSQL database (a fresh one on the shared server, dropped afterwards) and one Redis.

One test walks the whole story, because every step needs the state the previous one left: ingest from
both nodes into one organization at once, a stream leased by exactly one node, the lease holder SIGKILLed
mid-traffic, the lease taken over within its expiry, nothing acknowledged lost, one gap-free chain that
`auditkeep verify` accepts, and failed authentications counted once across both nodes through Redis.
"""

from __future__ import annotations

import os
import secrets
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from tests.e2e.server import Server
from tests.e2e.test_faults import Ingest, _assert_nothing_lost, _org, _stored, _verify
from tests.streams.receivers import WebhookReceiver, webhook_receiver

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

LEASE_S = 2.0
POLL_S = 0.05
SECRET = "nodes-webhook-secret-0123456789abcdef"


@pytest.fixture
def node_db(postgres_url: str) -> Iterator[str]:
    """A fresh database on the shared server, so only this test's nodes and streams are in it."""
    name = f"ak_nodes_{secrets.token_hex(4)}"
    admin = sa.make_url(postgres_url).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).set(drivername="postgresql").render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


def _wait(condition: object, timeout: float, what: str) -> float:
    """Wait for `condition()`; the seconds it took."""
    start = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - start < timeout, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - start


def _holder(engine: sa.Engine, stream_id: str) -> tuple[str | None, float | None]:
    """The stream's lease owner and the seconds its lease has left (by the database's clock)."""
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT lease_owner, EXTRACT(EPOCH FROM lease_until - now()) FROM streams WHERE id = :id"),
            {"id": stream_id}).one()
    return row[0], (float(row[1]) if row[1] is not None else None)


def _node_of(owner: str, nodes: dict[str, Server]) -> str:
    """Which node's process group the owner's pid (hostname:pid:random) belongs to."""
    pid = int(owner.split(":")[1])
    group = os.getpgid(pid)
    matches = [name for name, node in nodes.items() if node.proc is not None and node.proc.pid == group]
    assert len(matches) == 1, f"lease owner {owner} is no node's"
    return matches[0]


def test_two_nodes_share_one_chain_one_stream_lease_and_rate_limits_and_survive_a_sigkill(
        node_db: str, receiver: WebhookReceiver) -> None:
    env = {"AUDITKEEP_STREAM_LEASE_SECONDS": str(LEASE_S), "AUDITKEEP_STREAM_POLL_SECONDS": str(POLL_S),
           "AUDITKEEP_RATE_LIMIT_STORAGE": "redis://127.0.0.1:6379",
           "AUDITKEEP_RATE_LIMIT_KEY_PREFIX": f"nodes-{secrets.token_hex(4)}",
           "AUDITKEEP_AUTH_FAILURE_LIMIT": "20/minute",
           # The per-key limit is shared too: on a quiet machine the traffic below outruns the default,
           # and its intended 429s are not what this test is about (tests/api/test_rate_limits.py is).
           "AUDITKEEP_RATE_LIMIT": "100000/second"}
    org, h = _org(node_db)
    nodes = {"a": Server(node_db, env=env).start(), "b": Server(node_db, env=env).start()}
    engine = sa.create_engine(sa.make_url(node_db).set(drivername="postgresql+psycopg"))
    traffic: list[Ingest] = []
    try:
        r = httpx.post(f"{nodes['a'].url}/api/v1/streams", headers=h, json={
            "name": "siem", "kind": "webhook", "start_seq": 1,
            "config": {"url": receiver.url, "secret": SECRET, "batch_size": 50}})
        assert r.status_code == 201, r.text
        stream_id = r.json()["id"]

        # Ingest into the one organization through both nodes at once.
        traffic = [Ingest(nodes["a"].url, h, threads=2).start(), Ingest(nodes["b"].url, h, threads=2).start()]
        for t in traffic:
            t.wait_acked(100, timeout=30)

        # While both live, one owner holds the stream's lease and keeps it (no flapping between nodes).
        owners: list[str] = []
        sample_end = time.monotonic() + 2 * LEASE_S
        while time.monotonic() < sample_end:
            owner, _ = _holder(engine, stream_id)
            if owner is not None:
                owners.append(owner)
            time.sleep(0.05)
        assert owners and len(set(owners)) == 1, f"the lease changed hands while both nodes lived: {set(owners)}"
        holder = _node_of(owners[0], nodes)
        survivor = "b" if holder == "a" else "a"
        seqs_before = [e["seq"] for e in receiver.events()]
        assert seqs_before, "nothing delivered while both nodes lived"
        dup_before = sum(c - 1 for c in Counter(seqs_before).values())
        assert dup_before == 0, "two nodes delivered the same events: the stream was not leased to one"

        # SIGKILL the lease holder mid-traffic; the other node takes the lease once it expires.
        _, left = _holder(engine, stream_id)
        nodes[holder].kill()

        def taken_over() -> bool:
            owner, _ = _holder(engine, stream_id)
            return owner is not None and owner != owners[0] and _node_of(owner, nodes) == survivor

        moved_after = _wait(taken_over, LEASE_S + 5, "the survivor to take the stream's lease")
        print(f"\nlease moved {moved_after:.2f} s after the kill (lease {LEASE_S} s, {left} s left at the kill)")
        assert moved_after <= LEASE_S + 1.0, f"the lease moved {moved_after:.2f} s after the kill"
        survivor_traffic = traffic[0] if survivor == "a" else traffic[1]
        acked_then = len(survivor_traffic.acked())
        survivor_traffic.wait_acked(acked_then + 50, timeout=20)  # ingest goes on through the survivor
    finally:
        for t in traffic:
            t.stop()
    try:
        live = nodes[survivor]
        # The killed node's requests in flight got no answer (status 0); every 201 from either node is stored.
        for t in traffic:
            assert {o.status for o in t.outcomes} <= {201, 0}
        stored = _stored(live.url, h)
        merged = Ingest(live.url, h)
        merged.outcomes = [o for t in traffic for o in t.outcomes]
        _assert_nothing_lost(merged, stored)

        # One chain: seqs 1..N without a gap, and the verifier accepts it.
        with engine.connect() as conn:
            seqs = [s for (s,) in conn.execute(sa.text(
                "SELECT e.seq FROM events e JOIN organizations o ON o.id = e.org_id WHERE o.name = :n "
                "ORDER BY e.seq"), {"n": org})]
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) >= len(stored)
        _verify(node_db, org)

        # The survivor's stream delivers every event; duplicates only from the batch in flight at the kill.
        def caught_up() -> bool:
            view = httpx.get(f"{live.url}/api/v1/streams/{stream_id}", headers=h).json()
            return bool(view["lag_events"] == 0)

        _wait(caught_up, 60, "the stream to catch up on the survivor")
        counts = Counter(e["seq"] for e in receiver.events())
        assert set(counts) >= set(range(1, len(seqs) + 1)), "a seq was never delivered"
        assert sum(c - 1 for c in counts.values()) <= 50, "more duplicates than one batch in flight"

        # The killed node comes back (a restart, as a host would) and the two count failed
        # authentications together through Redis: 10 on each is the limit of 20, so the next is 429 on a
        # node that alone saw only 10 (with memory:// each node would count its own 10 and answer 401).
        nodes[holder] = Server(node_db, env=env).start()
        bad = {"Authorization": "Key ak_not-a-real-key"}
        statuses = [httpx.get(f"{nodes[n].url}/api/v1/audit_logs", headers=bad).status_code
                    for _ in range(10) for n in ("a", "b")]
        assert statuses == [401] * 20
        assert httpx.get(f"{nodes['a'].url}/api/v1/audit_logs", headers=bad).status_code == 429
        assert httpx.get(f"{nodes['b'].url}/api/v1/audit_logs", headers=h).status_code == 429
    finally:
        for node in nodes.values():
            node.stop()
        engine.dispose()

