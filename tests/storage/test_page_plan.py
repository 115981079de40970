"""A limited page builds its log JSON for the page's rows only, whatever plan PostgreSQL picks (issue #11)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.settings import Settings
from auditkeep.storage import Storage, open_storage
from auditkeep.storage.pages import head_seq
from auditkeep.storage.queries import LogQuery, select_sql
from tests.conftest import make_tenant

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_storage(postgres_url: str, settings: Settings) -> Iterator[Storage]:
    s = open_storage(postgres_url, settings=settings.model_copy(update={"database_url": postgres_url}))
    yield s
    s.dispose()


def _subplan_loops(node: dict[str, Any]) -> list[int]:
    own = [int(node["Actual Loops"])] if node.get("Parent Relationship") == "SubPlan" else []
    return own + [n for child in node.get("Plans", []) for n in _subplan_loops(child)]


def test_page_json_is_built_for_the_page_rows_only_when_postgres_sorts(pg_storage: Storage) -> None:
    """With the matches sorted rather than walked in index order (the plan PostgreSQL picks for a partition
    without statistics), the JSON subplan runs once per row of the page, not once per match."""
    tenant = make_tenant(pg_storage)
    body = json.dumps([{"client_ip": "10.0.0.1", "url": f"https://x/{i}", "action": "a"} for i in range(300)])
    record_events(pg_storage, tenant.org.id, parse_events(body.encode(), datetime.now(UTC)))
    with pg_storage.read() as conn:
        q = LogQuery(tenant.org.id, descending=True, limit=10, max_seq=head_seq(conn, pg_storage, tenant.org.id))
        sql, params = select_sql(pg_storage, q, pg_storage.backend.log_json_sql(integrity=False), limit=11)
        # What the planner does without statistics: no ordered index walk, every match fetched and sorted.
        conn.exec_driver_sql("SET LOCAL enable_indexscan = off")
        plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params).scalar_one()
        rows = conn.exec_driver_sql(sql, params).all()
    root = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
    assert "Sort" in json.dumps(root)  # the plan under test: matches sorted, not walked
    loops = _subplan_loops(root)
    assert loops and max(loops) == 11
    assert [json.loads(r[0])["url"] for r in rows] == [f"https://x/{i}" for i in range(299, 288, -1)]
