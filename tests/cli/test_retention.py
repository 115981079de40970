"""Retention (issue #4): `orgs set-retention`, `purge`; the chain stays verifiable from the oldest kept event."""

from __future__ import annotations

import re
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
from auditkeep.storage import Storage, identity, tables
from auditkeep.storage.events import iter_chain
from auditkeep.storage.retention import purge_org
from tests.conftest import Tenant

NOW = datetime.now(UTC)


def run(cli: CliRunner, *args: str, code: int = 0) -> str:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout + result.stderr


def store(storage: Storage, tenant: Tenant, ages_days: list[float], *, received_days_ago: float = 0) -> None:
    """Events with timestamps `ages_days` ago, stored in this (seq) order, received `received_days_ago`."""
    events = [{"client_ip": "10.0.0.1", "url": f"/e/{i}", "action": "aged",
               "timestamp": (NOW - timedelta(days=age)).isoformat()} for i, age in enumerate(ages_days)]
    received = NOW - timedelta(days=received_days_ago)
    record_events(storage, tenant.org.id, parse_events(orjson.dumps(events), received), received_at=received)


def received_at(storage: Storage, tenant: Tenant) -> list[datetime]:
    with storage.read() as conn:
        return list(conn.execute(sa.select(tables.events.c.received_at).where(tables.events.c.org_id == tenant.org.id)
                                 .order_by(tables.events.c.seq)).scalars())


def chain(storage: Storage, tenant: Tenant) -> list[dict[str, Any]]:
    return list(iter_chain(storage, tenant.org.id))


def first_seq(storage: Storage, tenant: Tenant) -> int:
    with storage.read() as conn:
        return int(conn.execute(sa.text("SELECT first_seq FROM chain_heads WHERE org_id = :o"),
                                {"o": tenant.org.id}).scalar_one())


PURGED = re.compile(r"^(?P<org>\S+): deleted (?P<what>.*?) received before (?P<cutoff>\S+?)\)?; (?P<kept>.*)$", re.M)


def purge_line(out: str, tenant: Tenant, days: int, began: datetime) -> tuple[str, str]:
    """The purge's line for `tenant` with its cutoff (`days` before the purge, which `began`) checked and cut
    out: (deleted part, kept part)."""
    (match,) = [m for m in PURGED.finditer(out) if m["org"] == tenant.org.name]
    cutoff = datetime.fromisoformat(match["cutoff"])
    assert began - timedelta(days=days) <= cutoff <= datetime.now(UTC) - timedelta(days=days)
    return match["what"], match["kept"]


def test_purge_deletes_what_was_received_before_the_cutoff_whatever_its_timestamp(
    cli: CliRunner, storage: Storage, tenant: Tenant
) -> None:
    """Retention counts from received_at: old imports go once received long enough ago, recent imports of old
    events stay, and the report says what was kept and why (issue #9)."""
    store(storage, tenant, [400, 3000, 250], received_days_ago=200)  # one of them back-dated long ago
    store(storage, tenant, [500, 1000], received_days_ago=10)  # imported or back-dated: old timestamps, new here
    store(storage, tenant, [5])
    run(cli, "orgs", "set-retention", tenant.org.name, "100")
    began = datetime.now(UTC)
    out = run(cli, "purge", "--org", tenant.org.name)
    deleted, kept = purge_line(out, tenant, 100, began)
    assert deleted == "3 events (seq 1-3)"
    # seq 4-6 and the retention change (seq 7) are kept; 2 of them have timestamps older than 100 days.
    assert kept == ("kept 4 events received since, 2 of them with a timestamp older than 100 days because they "
                    "were received within the last 100 days (imported or back-dated)")
    kept_events = chain(storage, tenant)
    assert [e["url"] for e in kept_events if e["action"] == "aged"] == ["/e/0", "/e/1", "/e/0"]
    assert kept_events[0]["seq"] == 4 and first_seq(storage, tenant) == 4
    purge = [e for e in kept_events if e["action"] == "retention.purge"]
    assert len(purge) == 1
    payload = purge[0]["payload"]
    assert (payload["count"], payload["first_seq"], payload["last_seq"]) == (3, 1, 3)
    assert (payload["kept"], payload["kept_with_older_timestamp"]) == (4, 2)
    assert payload["cutoff_applies_to"] == "received_at" and payload["retention_days"] == 100
    assert payload["oldest_timestamp"] == (NOW - timedelta(days=3000)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert purge[0]["source"] == "cli" and purge[0]["status"] == "success"
    changes = [e for e in kept_events if e["action"] == "organization.retention_change"]
    assert changes[0]["payload"]["retention_days"] == 100
    assert "verifies" in run(cli, "verify", "--org", tenant.org.name)


def test_imported_events_go_once_received_longer_ago_than_the_retention(
    cli: CliRunner, storage: Storage, tenant: Tenant
) -> None:
    """The 7,147 back-dated events of issue #9, in small: kept while recent here, purged on a later day."""
    store(storage, tenant, [2000 + i for i in range(5)], received_days_ago=95)
    store(storage, tenant, [3000 + i for i in range(4)], received_days_ago=80)
    run(cli, "orgs", "set-retention", tenant.org.name, "90")
    began = datetime.now(UTC)
    deleted, kept = purge_line(run(cli, "purge"), tenant, 90, began)
    assert deleted == "5 events (seq 1-5)"
    assert kept.startswith("kept 5 events received since, 4 of them with a timestamp older than 90 days")
    assert "verifies" in run(cli, "verify", "--org", tenant.org.name)
    # Eleven days on, the second import is past the retention too: a cutoff 79 days ago takes it.
    result = purge_org(storage, tenant.org.id, (NOW - timedelta(days=79)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    assert (result.count, result.first_seq, result.last_seq, result.kept_old) == (4, 6, 9, 0)
    assert "verifies" in run(cli, "verify", "--org", tenant.org.name)


def test_nothing_to_delete_is_reported_with_what_is_kept(cli: CliRunner, storage: Storage, tenant: Tenant) -> None:
    store(storage, tenant, [400, 401])
    run(cli, "orgs", "set-retention", tenant.org.name, "30")
    out = run(cli, "purge", "--org", tenant.org.name)
    (line,) = [x for x in out.splitlines() if x.startswith(f"{tenant.org.name}:")]
    assert line.startswith(f"{tenant.org.name}: deleted no events (none received before 20")
    assert line.endswith("; kept 3 events received since, 2 of them with a timestamp older than 30 days because "
                         "they were received within the last 30 days (imported or back-dated)")
    assert [e["seq"] for e in chain(storage, tenant)] == [1, 2, 3]


def test_received_at_never_decreases_along_the_chain(storage: Storage, tenant: Tenant) -> None:
    """A writer whose clock is behind the head's stamps its events with the head's received_at, so the
    events received before any cutoff are a prefix of the chain."""
    store(storage, tenant, [5], received_days_ago=1)
    store(storage, tenant, [5], received_days_ago=3)  # a clock two days behind
    stamps = received_at(storage, tenant)
    assert stamps[0] == stamps[1] == (NOW - timedelta(days=1)).replace(tzinfo=UTC)


def test_chain_verifies_from_the_oldest_kept_event(cli: CliRunner, storage: Storage, tenant: Tenant) -> None:
    store(storage, tenant, [900 - i for i in range(50)], received_days_ago=40)
    store(storage, tenant, [1, 2, 3])
    run(cli, "orgs", "set-retention", tenant.org.name, "30")
    run(cli, "purge")
    kept = chain(storage, tenant)
    assert kept[0]["seq"] == 51
    report = verify_chain(kept, start_seq=kept[0]["seq"], prev_hash=kept[0]["prev_hash"], frontier=None)
    assert report.ok, report
    # The kept prev_hash is the hash of the deleted event before it: the link to a signed anchor.
    assert kept[0]["prev_hash"] != "0" * 64


def test_purge_in_batches_and_again_is_a_no_op(storage: Storage, tenant: Tenant) -> None:
    store(storage, tenant, [50.0] * 25, received_days_ago=50)
    store(storage, tenant, [1.0])
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
    run(cli, "orgs", "set-retention", tenant.org.name, "forever")
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


@pytest.mark.parametrize("days", ["0", "-5", "36501", "1.5", "ninety", ""])
def test_retention_days_outside_1_to_36500_is_one_line(cli: CliRunner, tenant: Tenant, days: str) -> None:
    out = run(cli, "orgs", "set-retention", tenant.org.name, days, code=2)
    assert out == f"error: DAYS must be a whole number of days from 1 to 36,500, or 'forever'; got {days!r}\n"


def test_retention_days_at_the_bounds_are_accepted(cli: CliRunner, storage: Storage, tenant: Tenant) -> None:
    name = tenant.org.name
    assert run(cli, "orgs", "set-retention", name, "36500") == f"retention of {name}: 36500 days\n"
    assert run(cli, "orgs", "set-retention", tenant.org.name, "1") == f"retention of {tenant.org.name}: 1 days\n"
    with storage.read() as conn:
        assert identity.get_org(conn, tenant.org.name).retention_days == 1


def test_unknown_organization_is_one_line(cli: CliRunner) -> None:
    out = run(cli, "orgs", "set-retention", "no-such-org", "5", code=1)
    assert out.startswith("error:") and len(out.strip().splitlines()) == 1


def test_cli_purge_anchors_the_boundary_so_full_verification_still_passes(
    cli: CliRunner, storage: Storage, tenant: Tenant
) -> None:
    """`purge` stores a signed anchor (checkpoint + Merkle state) first; `verify` passes afterwards."""
    store(storage, tenant, [400, 300, 200], received_days_ago=200)
    store(storage, tenant, [10, 5])
    run(cli, "orgs", "set-retention", tenant.org.name, "100")
    run(cli, "purge", "--org", tenant.org.name)
    with storage.read() as conn:
        anchors = conn.execute(sa.text("SELECT count(*) FROM integrity_anchors WHERE org_id = :o"),
                               {"o": tenant.org.id}).scalar_one()
    assert anchors == 1
    out = run(cli, "verify", "--org", tenant.org.name)
    assert "verifies" in out
