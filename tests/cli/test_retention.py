"""Retention (issue #4): `orgs set-retention`, `purge`; the chain stays verifiable from the oldest kept event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from auditkeep.cli import app
from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.integrity.verify import verify_chain
from auditkeep.storage import Storage, identity
from auditkeep.storage.events import iter_chain
from auditkeep.storage.retention import purge_org
from tests.conftest import Tenant

NOW = datetime.now(UTC)


def run(cli: CliRunner, *args: str, code: int = 0) -> str:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout + result.stderr


def store(storage: Storage, tenant: Tenant, ages_days: list[float]) -> None:
    """Events with timestamps `ages_days` ago, stored in this (seq) order."""
    events = [{"client_ip": "10.0.0.1", "url": f"/e/{i}", "action": "aged",
               "timestamp": (NOW - timedelta(days=age)).isoformat()} for i, age in enumerate(ages_days)]
    record_events(storage, tenant.org.id, parse_events(orjson.dumps(events), NOW))


def chain(storage: Storage, tenant: Tenant) -> list[dict[str, Any]]:
    return list(iter_chain(storage, tenant.org.id))


def first_seq(storage: Storage, tenant: Tenant) -> int:
    with storage.read() as conn:
        return int(conn.execute(sa.text("SELECT first_seq FROM chain_heads WHERE org_id = :o"),
                                {"o": tenant.org.id}).scalar_one())


def test_purge_deletes_the_old_prefix_and_records_it(cli: CliRunner, storage: Storage, tenant: Tenant) -> None:
    store(storage, tenant, [400, 300, 200, 10, 500, 5])  # seq 5 is back-dated behind a recent one
    run(cli, "orgs", "set-retention", tenant.org.name, "100")
    out = run(cli, "purge", "--org", tenant.org.name)
    assert "3 event(s) purged" in out
    kept = chain(storage, tenant)
    assert [e["url"] for e in kept if e["action"] == "aged"] == ["/e/3", "/e/4", "/e/5"]
    assert kept[0]["seq"] == 4 and first_seq(storage, tenant) == 4
    purge = [e for e in kept if e["action"] == "retention.purge"]
    assert len(purge) == 1
    payload = purge[0]["payload"]
    assert payload["count"] == 3 and payload["first_seq"] == 1 and payload["last_seq"] == 3
    assert payload["retention_days"] == 100 and payload["oldest_timestamp"] < payload["newest_timestamp"]
    assert purge[0]["source"] == "cli" and purge[0]["status"] == "success"
    changes = [e for e in kept if e["action"] == "organization.retention_change"]
    assert changes[0]["payload"]["retention_days"] == 100


def test_chain_verifies_from_the_oldest_kept_event(cli: CliRunner, storage: Storage, tenant: Tenant) -> None:
    store(storage, tenant, [900 - i for i in range(50)] + [1, 2, 3])
    run(cli, "orgs", "set-retention", tenant.org.name, "30")
    run(cli, "purge")
    kept = chain(storage, tenant)
    assert kept[0]["seq"] == 51
    report = verify_chain(kept, start_seq=kept[0]["seq"], prev_hash=kept[0]["prev_hash"], frontier=None)
    assert report.ok, report
    # The kept prev_hash is the hash of the deleted event before it: the link to a signed anchor.
    assert kept[0]["prev_hash"] != "0" * 64


def test_purge_in_batches_and_again_is_a_no_op(storage: Storage, tenant: Tenant) -> None:
    store(storage, tenant, [50.0] * 25 + [1.0])
    cutoff = (NOW - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    seen: list[tuple[int, int]] = []
    result = purge_org(storage, tenant.org.id, cutoff, batch=7,
                       before_delete=lambda last: seen.append((last, len(chain(storage, tenant)))))
    assert (result.count, result.first_seq, result.last_seq) == (25, 1, 25)
    assert seen == [(25, 26)]  # the anchor hook runs once, before anything is deleted
    assert purge_org(storage, tenant.org.id, cutoff, batch=7).count == 0
    assert [e["seq"] for e in chain(storage, tenant)] == [26]


def test_retention_forever_purges_nothing(cli: CliRunner, storage: Storage, tenant: Tenant) -> None:
    store(storage, tenant, [1000])
    run(cli, "purge")
    assert len(chain(storage, tenant)) == 1
    out = run(cli, "purge", "--org", tenant.org.name, code=1)
    assert "forever" in out
    run(cli, "orgs", "set-retention", tenant.org.name, "10")
    run(cli, "orgs", "set-retention", tenant.org.name, "0")  # back to forever
    with storage.read() as conn:
        assert identity.get_org(conn, tenant.org.name).retention_days is None


def test_events_stay_append_only_outside_purge(storage: Storage, tenant: Tenant) -> None:
    """The guard row exists only inside the purge transaction."""
    store(storage, tenant, [1000])
    with pytest.raises(sa.exc.DatabaseError), storage.write() as conn:
        conn.execute(sa.text("DELETE FROM events WHERE org_id = :o"), {"o": tenant.org.id})
    with storage.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM retention_guard")).scalar_one() == 0
    assert len(chain(storage, tenant)) == 1


def test_unknown_organization_is_one_line(cli: CliRunner) -> None:
    out = run(cli, "orgs", "set-retention", "no-such-org", "5", code=1)
    assert out.startswith("error:") and len(out.strip().splitlines()) == 1


def test_cli_purge_anchors_the_boundary_so_full_verification_still_passes(
    cli: CliRunner, storage: Storage, tenant: Tenant
) -> None:
    """`purge` stores a signed anchor (checkpoint + Merkle state) first; `verify` passes afterwards."""
    store(storage, tenant, [400, 300, 200, 10, 5])
    run(cli, "orgs", "set-retention", tenant.org.name, "100")
    run(cli, "purge", "--org", tenant.org.name)
    with storage.read() as conn:
        anchors = conn.execute(sa.text("SELECT count(*) FROM integrity_anchors WHERE org_id = :o"),
                               {"o": tenant.org.id}).scalar_one()
    assert anchors == 1
    out = run(cli, "verify", "--org", tenant.org.name)
    assert "verifies" in out
