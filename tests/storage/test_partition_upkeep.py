"""A year of partition upkeep against a clock the test controls (issue #14), on a fresh database of the
shared PostgreSQL server (upkeep drops partitions, so it never runs on the database other tests share).

Two keepers (two nodes) are asked every day of 2027; upkeep runs weekly. Events arrive when the clock
says, with their own timestamps (a back-dated one and a straggler for the default partition), and
retention purges two organizations' chain prefixes. What must hold: last month to two months ahead always
exist, as does the default; at most one keeper runs per interval, and a node that dies holding the lease
stops upkeep only until its lease expires; a month is dropped only once no row is left in it, so a
back-dated event received inside the retention keeps its (old) month, and chains still verify.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from auditkeep.ingest.checkpointing import anchor_before_purge
from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.ingest.verification import verify_org
from auditkeep.settings import Settings
from auditkeep.storage import Storage, identity, leases, open_storage, rollup
from auditkeep.storage.partition_keeper import JOB, PartitionKeeper
from auditkeep.storage.partitions import existing, month_start, upkeep
from auditkeep.storage.retention import purge_org
from auditkeep.storage.tables import job_leases
from auditkeep.storage.types import format_timestamp

pytestmark = pytest.mark.postgres

AHEAD = 2
WEEK = 7 * 86400


@pytest.fixture
def fresh(postgres_url: str, settings: Settings) -> Iterator[Storage]:
    name = f"ak_parts_{secrets.token_hex(4)}"
    admin = sa.make_url(postgres_url).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin.set(database=name).render_as_string(hide_password=False)
    storage = open_storage(url, settings=settings.model_copy(update={
        "database_url": url, "partition_months_ahead": AHEAD, "partition_upkeep_seconds": WEEK,
        "partition_lease_seconds": 2 * 86400}))
    try:
        yield storage
    finally:
        storage.dispose()
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def _seed(storage: Storage, org_id: int, n: int, *, timestamp: datetime, received: datetime) -> None:
    body = [{"action": "doc.read", "client_ip": "203.0.113.9", "url": f"https://app.test/{i}",
             "timestamp": format_timestamp(timestamp)} for i in range(n)]
    record_events(storage, org_id, parse_events(orjson.dumps(body), received), received_at=received)


def _purge(storage: Storage, org_id: int, cutoff: datetime) -> int:
    result = purge_org(storage, org_id, format_timestamp(cutoff),
                       before_delete=lambda seq: anchor_before_purge(storage, org_id, seq))
    return result.count


def _months(storage: Storage) -> set[str]:
    with storage.read() as conn:
        return set(existing(conn))


def _expected_ahead(day: datetime) -> set[str]:
    return {f"events_{month_start(day.year, day.month + k):%Y_%m}" for k in range(-1, AHEAD + 1)}


def test_a_year_of_partition_upkeep_keeps_months_ahead_and_drops_only_emptied_ones(fresh: Storage) -> None:
    storage = fresh
    clock = {"now": datetime(2027, 1, 1, 3, 0, tzinfo=UTC)}
    keepers = [PartitionKeeper(storage, storage.settings, owner=f"node-{n}", clock=lambda: clock["now"])
               for n in "ab"]
    with storage.write() as conn:
        a = identity.create_org(conn, f"parts-a-{secrets.token_hex(3)}")
        b = identity.create_org(conn, f"parts-b-{secrets.token_hex(3)}")

    runs: list[datetime] = []
    dead_since: datetime | None = None
    kept_feb_while_busy = kept_may_while_busy = False
    for day_n in range(365):
        day = datetime(2027, 1, 1, 3, 0, tzinfo=UTC) + timedelta(days=day_n)
        clock["now"] = day
        if day.date() == datetime(2027, 2, 10).date():
            _seed(storage, a.id, 3, timestamp=day, received=day)
            _seed(storage, b.id, 2, timestamp=day, received=day)
        if day.date() == datetime(2027, 5, 5).date():
            _seed(storage, b.id, 2, timestamp=day, received=day)
        if day.date() == datetime(2027, 6, 10).date():
            # Back-dated into February, received in June; and a straggler no monthly partition covers.
            _seed(storage, b.id, 1, timestamp=datetime(2027, 2, 3, tzinfo=UTC), received=day)
            _seed(storage, a.id, 1, timestamp=datetime(2019, 1, 1, tzinfo=UTC), received=day)
            with storage.read() as conn:
                assert conn.exec_driver_sql("SELECT count(*) FROM ONLY events_default").scalar() == 1
        if day.date() == datetime(2027, 7, 1).date():
            assert _purge(storage, a.id, day) == 4  # all of a, the straggler too
        if day.date() == datetime(2027, 8, 15).date():
            _seed(storage, b.id, 2, timestamp=day, received=day)
        if day.date() == datetime(2027, 9, 1).date():
            # b's prefix received before June: its February and May events, not the back-dated one.
            assert _purge(storage, b.id, datetime(2027, 6, 1, tzinfo=UTC)) == 4
        if day.date() == datetime(2027, 3, 12).date():
            # A node takes the job and dies: nobody runs upkeep until its lease (2 days) expires.
            died = day - timedelta(hours=1)
            with storage.write() as conn:
                assert leases.acquire(conn, job_leases, JOB, "dead-node", now=died, ttl=2 * 86400)
            dead_since = day

        ran = 0
        for k in keepers:
            before = k.last
            k.run_once()
            if k.last is not before:
                ran += 1
        assert ran <= 1, f"both nodes ran upkeep on {day:%Y-%m-%d}"
        if ran:
            runs.append(day)
            months = _months(storage)
            assert "events_default" in months
            assert _expected_ahead(day) <= months, f"{day:%Y-%m-%d}: {sorted(months)}"
            if day >= datetime(2027, 4, 1, tzinfo=UTC) and day < datetime(2027, 9, 1, tzinfo=UTC):
                kept_feb_while_busy |= "events_2027_02" in months
            if day >= datetime(2027, 7, 1, tzinfo=UTC) and day < datetime(2027, 9, 1, tzinfo=UTC):
                kept_may_while_busy |= "events_2027_05" in months
        if dead_since is not None and dead_since <= day < dead_since + timedelta(days=2):
            assert not ran, f"upkeep ran on {day:%Y-%m-%d} while a dead node's lease held the job"

    # Weekly, but for the two days the dead node's lease held the job.
    gaps = [(later - earlier).days for earlier, later in pairwise(runs)]
    assert set(gaps) <= {7, 9}, gaps
    assert gaps.count(9) == 1
    assert {r.date() for r in runs} >= {datetime(2027, 3, 14).date()}  # the day the lease expired
    assert kept_feb_while_busy and kept_may_while_busy

    end = upkeep(storage, datetime(2027, 12, 31, tzinfo=UTC), AHEAD)
    months = _months(storage)
    # February keeps b's back-dated event (received in June, within b's retention at the purge) and
    # August b's latest events; every other month before November was emptied (or never used) and dropped.
    assert months == {"events_default", "events_2027_02", "events_2027_08"} | _expected_ahead(
        datetime(2027, 12, 31, tzinfo=UTC)), sorted(months)
    assert "events_2027_05" not in months and "events_2027_01" not in months and "events_2026_12" not in months
    assert end.skipped == []

    # Dropping only emptied partitions removed no event: b's chain is its kept suffix 5..7 and verifies.
    with storage.read() as conn:
        seqs = [s for (s,) in conn.exec_driver_sql("SELECT seq FROM events WHERE org_id = %s ORDER BY seq", (b.id,))]
    assert seqs == [5, 6, 7]
    assert verify_org(storage, b.id).ok
    assert verify_org(storage, a.id).ok


def _purge_events(storage: Storage, org_id: int) -> dict[int, dict[str, Any]]:
    """The organization's stored retention.purge events' payloads, by seq."""
    with storage.read() as conn:
        return {seq: orjson.loads(p) for seq, p in conn.exec_driver_sql(
            "SELECT seq, payload::text FROM events WHERE org_id = %s AND action = 'retention.purge'",
            (org_id,))}


def _seeded(storage: Storage, org_id: int) -> list[int]:
    with storage.read() as conn:
        return [s for (s,) in conn.exec_driver_sql(
            "SELECT seq FROM events WHERE org_id = %s AND action = 'doc.read' ORDER BY seq", (org_id,))]


def test_a_year_of_upkeep_drops_whole_months_past_every_organizations_retention(fresh: Storage) -> None:
    """Two organizations keep 60 days, a third forever. Upkeep (weekly, against the test's clock) drops each
    past month once every row in it is past its organization's retention, instead of deleting it row by row:
    an event back-dated into a month keeps it until its own retention passes, and the month holding the third
    organization's events is never dropped (the others' rows in it go row by row when a later month
    drops). Every removed seq is accounted for by exactly one `retention.purge` event, and chains verify."""
    storage = fresh
    clock = {"now": datetime(2027, 1, 1, 3, 0, tzinfo=UTC)}
    keeper = PartitionKeeper(storage, storage.settings, owner="node-a", clock=lambda: clock["now"])
    with storage.write() as conn:
        a = identity.create_org(conn, f"exp-a-{secrets.token_hex(3)}")
        b = identity.create_org(conn, f"exp-b-{secrets.token_hex(3)}")
        c = identity.create_org(conn, f"exp-c-{secrets.token_hex(3)}")
        identity.set_retention(conn, a.id, 60)
        identity.set_retention(conn, b.id, 60)

    expired_on: dict[str, datetime] = {}
    # Read after each run: a retention.purge event is itself purged once past retention, like any event.
    purges: dict[int, dict[int, dict[str, Any]]] = {a.id: {}, b.id: {}, c.id: {}}
    for day_n in range(365):
        day = datetime(2027, 1, 1, 3, 0, tzinfo=UTC) + timedelta(days=day_n)
        clock["now"] = day
        if day.month == 4 and day.day == 5:  # back-dated into February, received in April
            _seed(storage, b.id, 1, timestamp=datetime(2027, 2, 3, tzinfo=UTC), received=day)
        if day.day == 10:
            _seed(storage, a.id, 3, timestamp=day, received=day)
            _seed(storage, b.id, 2, timestamp=day, received=day)
            if day.month == 3:
                _seed(storage, c.id, 3, timestamp=day, received=day)
        for org in (a, b, c):  # the stats roller, as `auditkeep serve` runs it, so drops must subtract counts
            rollup.roll_batch(storage, org.id)
        before = keeper.last
        keeper.run_once()
        if keeper.last is not before:
            assert keeper.last is not None
            for name in keeper.last.expired:
                expired_on[name] = day
            for org in (a, b, c):
                purges[org.id].update(_purge_events(storage, org.id))

    months_2027 = {f"events_2027_{m:02d}" for m in range(1, 13)}
    assert set(expired_on) & months_2027 == months_2027 - {"events_2027_03", "events_2027_11", "events_2027_12"}
    # January once its last row (received Jan 10) was 60 days old, at the next weekly run.
    assert datetime(2027, 3, 11, tzinfo=UTC) < expired_on["events_2027_01"] <= datetime(2027, 3, 19, tzinfo=UTC)
    # February waits for b's back-dated event, received April 5, to pass 60 days.
    assert datetime(2027, 6, 4, tzinfo=UTC) < expired_on["events_2027_02"] <= datetime(2027, 6, 12, tzinfo=UTC)
    assert _months(storage) & months_2027 == {"events_2027_03", "events_2027_11", "events_2027_12"}

    # c keeps everything; a and b keep what they received in November and December.
    assert _seeded(storage, c.id) == [1, 2, 3]
    with storage.read() as conn:
        kept = {org.id: conn.exec_driver_sql(
            'SELECT count(*) FROM events WHERE org_id = %s AND action = %s AND "timestamp" >= %s',
            (org.id, "doc.read", datetime(2027, 11, 1, tzinfo=UTC))).scalar_one() for org in (a, b)}
        firsts = {org.id: conn.exec_driver_sql("SELECT first_seq FROM chain_heads WHERE org_id = %s",
                                               (org.id,)).scalar_one() for org in (a, b, c)}
    assert len(_seeded(storage, a.id)) == kept[a.id] == 6
    assert len(_seeded(storage, b.id)) == kept[b.id] == 4
    assert firsts[c.id] == 1 and not purges[c.id]

    # Every removed seq, 1..first_seq - 1, is in exactly one retention.purge event's range, and its count.
    for org in (a, b):
        assert purges[org.id] and all(p["partition"] for p in purges[org.id].values())
        ranges = sorted((int(p["first_seq"]), int(p["last_seq"]), int(p["count"])) for p in purges[org.id].values())
        assert ranges[0][0] == 1 and ranges[-1][1] == firsts[org.id] - 1
        assert all(later[0] == earlier[1] + 1 for earlier, later in pairwise(ranges))
        assert all(last - first + 1 == count for first, last, count in ranges)
    # Dropped rows with some of a's and b's March rows deleted beside them (c's month is never dropped).
    assert any(int(p["deleted_rows"]) > 0 for p in purges[a.id].values())
    for org in (a, b, c):
        assert verify_org(storage, org.id).ok
    # The stats rollup counts exactly the events still stored up to its position (drops subtracted theirs).
    with storage.read() as conn:
        for org in (a, b, c):
            rolled = rollup.rolled_seq(conn, storage, org.id)
            counted = conn.exec_driver_sql("SELECT coalesce(sum(event_count), 0) FROM stats_rollup "
                                           "WHERE org_id = %s AND span = 'day' AND field = ''", (org.id,)).scalar_one()
            stored = conn.exec_driver_sql("SELECT count(*) FROM events WHERE org_id = %s AND seq <= %s",
                                          (org.id, rolled)).scalar_one()
            assert rolled > 0 and counted == stored, (org.name, rolled, counted, stored)
