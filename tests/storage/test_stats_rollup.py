"""The stats rollup (issue #13, storage/rollup.py): stats served from it equal counts computed from a full
export, with part of the log rolled up and a tail not yet, after ingest, a retention purge and an erasure,
on both backends; the rollup's rows equal a recount from scratch after all of them."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from auditkeep.erasure import erase_person
from auditkeep.ingest.selfaudit import Origin
from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.settings import Settings
from auditkeep.storage import Storage, open_storage, rollup, stats
from auditkeep.storage.queries import LogQuery
from auditkeep.storage.retention import purge_org
from auditkeep.storage.types import format_timestamp
from tests.conftest import Tenant, make_tenant

URL = "/api/v1/audit_logs"
STATS = "/api/v1/audit_logs/stats"
START = datetime(2024, 3, 1, 22, 0, tzinfo=UTC)
# Neither end on an hour: the partial hours at each end are counted from events, whole days from day rows.
RANGE = {"start_date": "2024-03-01T22:29:13.5Z", "end_date": "2024-03-04T03:41:00Z"}
_TRUNC = {"minute": 16, "hour": 13, "day": 10}
_PAD = {"minute": ":00.000000Z", "hour": ":00:00.000000Z", "day": "T00:00:00.000000Z"}
SHAPES = [("hour", "action"), ("day", "user_email"), ("minute", "client_ip"), ("hour", "status"), ("day", "source")]
# Served from the rollup (the first six), and not (counted from events).
FILTERS: list[dict[str, str]] = [
    {}, {"status": "failure"}, {"action": "api_key.*"}, {"action": "user.login"}, {"user_email": "BOB@a.test"},
    {"source": "web"}, {"client_ip": "10.0.0.0/24"}, {"q": "failed"}, {"status": "failure", "source": "api"},
]


def random_events(rng: random.Random, n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        at = START + timedelta(seconds=rng.randrange(-3_600, 3 * 86_400), microseconds=rng.randrange(1_000_000))
        out.append({
            "action": rng.choice(["user.login", "user.logout", "api_key.create", "api_key.revoke", "report.run",
                                  "audit_logs.read", None]),
            "user_email": rng.choice(["ann@a.test", "Bob@a.test", "bob@a.test", "cy@a.test", None]),
            "status": rng.choice(["success", "success", "failure", "denied", None]),
            "source": rng.choice(["api", "web", "cli", None]),
            "client_ip": rng.choice(["10.0.0.1", "10.0.0.9", "192.168.1.4", "2001:db8::1"]),
            "log_entry": rng.choice(["signed in", "Export FAILED", "ran a report"]), "url": "https://app.test/x",
            "timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        })
    return out


def _seed(client: TestClient, tenant: Tenant, events: list[dict[str, Any]]) -> None:
    r = client.post(URL, json=events, headers=tenant.headers)
    assert r.status_code == 201, r.text


def _export(client: TestClient, tenant: Tenant, params: dict[str, str]) -> list[dict[str, Any]]:
    r = client.get(URL, params=RANGE | params, headers=tenant.headers)
    assert r.status_code == 200, r.text
    return list(r.json()["logs"])


def _expected(logs: list[dict[str, Any]], interval: str, group_by: str) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for log in logs:
        key = log["timestamp"][: _TRUNC[interval]] + _PAD[interval]
        counts[key] += 1
        failures[key] += log["status"] == "failure"
    buckets = [{"start": k, "count": counts[k], "failures": failures[k]} for k in sorted(counts)]
    values = Counter(str(log[group_by]) for log in logs if log[group_by] is not None)
    return {"buckets": buckets, "top": values}


def _check_top(got: list[dict[str, Any]], values: Counter[str]) -> None:
    # Ties may sort differently by collation: the counts of each rank, and each value's count, must agree.
    assert [t["count"] for t in got] == sorted(values.values(), reverse=True)[:10]
    assert all(values[t["value"]] == t["count"] for t in got)


def _check_all(client: TestClient, storage: Storage, tenant: Tenant) -> None:
    """Every shape and filter: the API's stats equal the export's counts; the console's view without
    audit_logs.read events (storage) equals the export's without them."""
    for params in FILTERS:
        logs = _export(client, tenant, params)
        for interval, group_by in SHAPES:
            r = client.get(STATS, params=RANGE | params | {"interval": interval, "group_by": group_by},
                           headers=tenant.headers)
            assert r.status_code == 200, r.text
            want = _expected(logs, interval, group_by)
            assert r.json()["buckets"] == want["buckets"], (params, interval)
            _check_top(r.json()["top"], want["top"])
    logs = [log for log in _export(client, tenant, {}) if log["action"] != stats.rollup.READ_ACTION]
    query = LogQuery(org_id=tenant.org.id, start=RANGE["start_date"].replace("13.5Z", "13.500000Z"),
                     end=RANGE["end_date"].replace("00Z", "00.000000Z"),
                     extra_where=(stats.HIDE_READS_WHERE,), extra_params=(rollup.READ_ACTION,))
    for interval, group_by in SHAPES:
        if interval != "minute":
            got = [{"start": b.start, "count": b.count, "failures": b.failures}
                   for b in stats.buckets(storage, query, interval)]  # type: ignore[arg-type]
            assert got == _expected(logs, interval, group_by)["buckets"]
        top = [{"value": t.value, "count": t.count} for t in stats.top(storage, query, group_by)]  # type: ignore[arg-type]
        _check_top(top, _expected(logs, interval, group_by)["top"])


def _roll(storage: Storage, org_id: int, limit: int | None = None) -> None:
    """Roll `org_id` up in small batches, to its head or to `limit` seqs past its position."""
    with storage.read() as conn:
        target = None if limit is None else rollup.rolled_seq(conn, storage, org_id) + limit
    while True:
        with storage.read() as conn:
            position = rollup.rolled_seq(conn, storage, org_id)
        batch = 97 if target is None else min(97, target - position)
        if batch <= 0 or not rollup.roll_batch(storage, org_id, batch):
            return


def _rows(storage: Storage, org_id: int) -> set[tuple[Any, ...]]:
    with storage.read() as conn:
        return {tuple(r) for r in conn.exec_driver_sql(
            "SELECT span, field, bucket_start, value, event_count, failure_count FROM stats_rollup "
            f"WHERE org_id = {org_id} AND event_count <> 0").all()}


def test_stats_from_the_rollup_equal_an_export_after_ingest_purge_and_erasure(
        app_client: TestClient, storage: Storage, tenant: Tenant) -> None:
    """Stats equal counts from a full export with the log rolled up in part (and a tail not yet), after a
    retention purge of rolled events, and after an erasure of rolled and unrolled events; the rollup then
    holds exactly what counting the remaining events from scratch gives."""
    rng = random.Random(13)
    org_id = tenant.org.id
    _seed(app_client, tenant, random_events(rng, 250))
    time.sleep(0.01)
    cutoff = format_timestamp(datetime.now(UTC))  # received before this: the first 250 events (and reads)
    time.sleep(0.01)
    _seed(app_client, tenant, random_events(rng, 250))
    _roll(storage, org_id)
    _seed(app_client, tenant, random_events(rng, 150))  # the tail
    with storage.read() as conn:  # the rollup serves the unfiltered range (with a tail to count)
        served = stats._plan(conn, storage, LogQuery(org_id=org_id, start="2024-03-01T22:29:13.500000Z",
                                                     end="2024-03-04T03:41:00.000000Z"))
    assert served is not None
    assert served.tail.after_seq is not None and served.tail.after_seq > 0
    _check_all(app_client, storage, tenant)

    result = purge_org(storage, org_id, cutoff)
    assert result.count >= 250
    _roll(storage, org_id, limit=200)  # part of the tail, the rest after the erasure
    _check_all(app_client, storage, tenant)

    erase_person(storage, org_id, user_email="cy@a.test", reason="test", origin=Origin.cli(["test"]))
    _check_all(app_client, storage, tenant)

    _check_all(app_client, storage, tenant)
    _roll(storage, org_id)  # everything, the stats' own read records included, so nothing moves until the recount
    kept = _rows(storage, org_id)
    assert any(field == "client_ip" and value == "[erased]" for _, field, _, value, _, _ in kept)
    assert not any(value == "cy@a.test" for _, _, _, value, _, _ in kept)
    with storage.write() as conn:
        conn.exec_driver_sql(f"DELETE FROM stats_rollup WHERE org_id = {org_id}")
        conn.exec_driver_sql(f"UPDATE stats_positions SET rolled_seq = 0 WHERE org_id = {org_id}")
    _roll(storage, org_id)
    assert _rows(storage, org_id) == kept


def test_the_roller_counts_each_event_once_from_where_it_stopped(storage: Storage, app_client: TestClient,
                                                                  tenant: Tenant) -> None:
    """Batches move the position to the head exactly; a second pass finds nothing; the total rows count
    every event once."""
    _seed(app_client, tenant, random_events(random.Random(7), 120))
    _roll(storage, tenant.org.id)
    assert rollup.roll_batch(storage, tenant.org.id) == 0
    with storage.read() as conn:
        head = conn.exec_driver_sql(f"SELECT seq FROM chain_heads WHERE org_id = {tenant.org.id}").scalar_one()
        assert rollup.rolled_seq(conn, storage, tenant.org.id) == head
        total = conn.exec_driver_sql(f"SELECT sum(event_count) FROM stats_rollup WHERE org_id = {tenant.org.id} "
                                     "AND span = 'day' AND field = ''").scalar_one()
    assert total == head


def test_users_and_addresses_are_counted_per_day_alone(storage: Storage, app_client: TestClient,
                                                       tenant: Tenant) -> None:
    """The many-valued fields have no hour rows (they were most of the rollup), and their day rows count
    each event with a value once."""
    _seed(app_client, tenant, random_events(random.Random(11), 120))
    _roll(storage, tenant.org.id)
    fields = ", ".join(f"'{field}'" for field in rollup.DAY_FIELDS)
    with storage.read() as conn:
        hourly = conn.exec_driver_sql(f"SELECT count(*) FROM stats_rollup WHERE org_id = {tenant.org.id} "
                                      f"AND span = 'hour' AND field IN ({fields})").scalar_one()
        daily = dict(conn.exec_driver_sql(
            f"SELECT field, sum(event_count) FROM stats_rollup WHERE org_id = {tenant.org.id} AND span = 'day' "
            "AND field IN ('user_email', 'client_ip') GROUP BY field").all())
        events = conn.exec_driver_sql(f"SELECT count(user_email), count(client_ip) FROM events "
                                      f"WHERE org_id = {tenant.org.id}").one()
    assert hourly == 0
    assert (daily["user_email"], daily["client_ip"]) == tuple(events)


@pytest.mark.postgres
def test_a_roller_finding_an_organization_being_rolled_goes_on_without_waiting(postgres_url: str,
                                                                               settings: Settings) -> None:
    """PostgreSQL: every serve worker runs a roller. While one holds an organization's position row, another's
    batch for that organization returns at once with nothing counted (SKIP LOCKED) instead of queueing to count
    the same events after it; once the row is free the batch counts as usual. (SQLite has one writer.)"""
    storage = open_storage(postgres_url, settings=settings.model_copy(update={"database_url": postgres_url}))
    try:
        tenant = make_tenant(storage)
        record_events(storage, tenant.org.id, parse_events(orjson.dumps(random_events(random.Random(3), 5)),
                                                           datetime.now(UTC)))
        with storage.engine.connect() as holder:
            holder.exec_driver_sql("INSERT INTO stats_positions (org_id, rolled_seq) VALUES (%s, 0) "
                                   "ON CONFLICT DO NOTHING", (tenant.org.id,))
            holder.commit()
            holder.exec_driver_sql("SELECT 1 FROM stats_positions WHERE org_id = %s FOR UPDATE", (tenant.org.id,))
            started = time.monotonic()
            assert rollup.roll_batch(storage, tenant.org.id) == 0
            assert time.monotonic() - started < 5  # did not wait for the holder
            holder.rollback()
        assert rollup.roll_batch(storage, tenant.org.id) == 5
    finally:
        storage.dispose()
