"""`user_email` filters match ASCII case-insensitively, served by the lower-cased index (migration 0007)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import orjson

from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.storage import Storage
from auditkeep.storage.events import iter_log_json
from auditkeep.storage.queries import LogFilters, LogQuery, ascii_lower, choose_driver, select_sql
from tests.conftest import Tenant

EMAILS = ["Ann@Example.COM", "ann@example.com", "ANN@EXAMPLE.COM", "bob@example.com", "Änn@example.com",
          "änn@example.com"]


def _add(storage: Storage, org_id: int, emails: list[str]) -> list[str]:
    events = [{"client_ip": "10.0.0.1", "url": f"https://x/{i}", "user_email": e} for i, e in enumerate(emails)]
    return record_events(storage, org_id, parse_events(orjson.dumps(events), datetime.now(UTC)))


def _emails(storage: Storage, q: LogQuery) -> list[str]:
    return [orjson.loads(text)["user_email"] for chunk in iter_log_json(storage, q) for text in chunk]


def test_ascii_lower_folds_only_a_to_z() -> None:
    assert ascii_lower("Ann@Example.COM") == "ann@example.com"
    assert ascii_lower("ÄNN@İ.TEST") == "Änn@İ.test"


def test_user_email_matches_ascii_case_insensitively_and_returns_the_stored_value(
    storage: Storage, tenant: Tenant
) -> None:
    """Any ASCII case finds all three spellings, each returned as stored; other letters keep their case,
    alike on both backends (SQLite's lower() folds only ASCII)."""
    _add(storage, tenant.org.id, EMAILS)
    for asked in ("ann@example.com", "aNN@exAMPLE.com", "ANN@EXAMPLE.COM"):
        q = LogQuery(org_id=tenant.org.id, filters=LogFilters(user_email=asked))
        assert _emails(storage, q) == ["Ann@Example.COM", "ann@example.com", "ANN@EXAMPLE.COM"]
    q = LogQuery(org_id=tenant.org.id, filters=LogFilters(user_email="Änn@EXAMPLE.com"))
    assert _emails(storage, q) == ["Änn@example.com"]
    both = LogQuery(org_id=tenant.org.id, filters=LogFilters(user_email="ANN@example.com", action=None, user_id=None),
                    descending=True, limit=2)
    assert _emails(storage, both) == ["ANN@EXAMPLE.COM", "ann@example.com"]


def _plan(storage: Storage, q: LogQuery) -> str:
    with storage.engine.connect() as conn:
        q = choose_driver(conn, storage, q)
        sql, params = select_sql(storage, q, storage.backend.log_json_sql(integrity=False))
        if storage.dialect == "sqlite":
            return "\n".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        try:
            cursor.execute(f"EXPLAIN {sql}", params)
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.close()


def test_the_user_email_filter_is_an_index_probe_in_walk_order(storage: Storage, tenant: Tenant) -> None:
    """A page filtered by user_email reads the lower-cased index in (timestamp, seq) order: no table scan,
    no sort, on both backends."""
    _add(storage, tenant.org.id, [f"user{i % 400}@Example.com" for i in range(4000)])
    if storage.dialect == "postgresql":
        with storage.write() as conn:
            conn.exec_driver_sql("ANALYZE events")
    q = LogQuery(org_id=tenant.org.id, filters=LogFilters(user_email="USER7@example.com"), limit=100)
    plan = _plan(storage, q)
    if storage.dialect == "sqlite":
        assert plan == "SEARCH events USING INDEX ix_events_org_user_email_ci_ts (org_id=? AND <expr>=?)", plan
    else:
        # The month's partition holding the rows is read through its copy of the index; the other
        # (empty) partitions cost nothing whatever they do.
        used = re.search(r"Index Scan using (\w+)_org_id_lower_timestamp_seq_idx on \1 ", plan)
        assert used is not None, plan
        assert f"Seq Scan on {used.group(1)} " not in plan and "Bitmap" not in plan, plan
        cond = (f"Index Cond: ((org_id = '{tenant.org.id}'::smallint) AND "
                "(lower((user_email)::text) = 'user7@example.com'")
        assert cond in plan, plan
    assert _emails(storage, q) == ["user7@Example.com"] * 10
