"""Fixtures for the alert tests: an evaluator driven by the test, and helpers to ingest and look."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from auditkeep.alerts.evaluator import Evaluator
from auditkeep.storage import Storage
from auditkeep.storage.tables import alert_firings, alert_rules
from tests.conftest import Tenant

LOGS = "/api/v1/audit_logs"
RULES = "/api/v1/alert_rules"


def clear_rules(storage: Storage) -> None:
    with storage.write() as conn:
        conn.execute(alert_firings.delete())
        conn.execute(alert_rules.delete())


@pytest.fixture
def evaluator(storage: Storage) -> Iterator[Evaluator]:
    """An evaluator over the session's database, driven by the test (`run_once`), retrying fast.

    Every rule is deleted before and after: an evaluator serves every organization's rules, and one left
    by an earlier test would notify a receiver long gone."""
    clear_rules(storage)
    ev = Evaluator(storage, storage.settings)
    ev.backoff_first = 0.01
    yield ev
    ev.stop()
    clear_rules(storage)


def ingest(client: TestClient, tenant: Tenant, n: int = 1, **fields: Any) -> list[int]:
    """`n` events with these fields; their seqs."""
    body = [{"client_ip": "192.0.2.1", "url": "https://app.test/x", "action": "report.view", **fields}
            for _ in range(n)]
    r = client.post(LOGS, json=body, headers=tenant.headers)
    assert r.status_code == 201, r.text
    uuids = r.json()["event_uuids"]
    seqs = {e["event_uuid"]: e["seq"] for e in events(client, tenant)}
    return [seqs[u] for u in uuids]


def events(client: TestClient, tenant: Tenant, action: str | None = None) -> list[dict[str, Any]]:
    params = {"include": "integrity", "limit": "1000", "start_date": "2000-01-01T00:00:00Z"}
    if action:
        params["action"] = action
    r = client.get(LOGS, params=params, headers=tenant.headers)
    assert r.status_code == 200, r.text
    logs: list[dict[str, Any]] = r.json()["logs"]
    return logs


def fired(client: TestClient, tenant: Tenant) -> list[dict[str, Any]]:
    """The payloads of the organization's alert.fired events, oldest first."""
    import orjson

    return [orjson.loads(e["payload"]) if isinstance(e["payload"], str) else e["payload"]
            for e in events(client, tenant, "alert.fired")]


def make_rule(client: TestClient, tenant: Tenant, **spec: Any) -> dict[str, Any]:
    # report.* by default: the tests' own reads (audit_logs.read) must not count.
    body = {"name": "rule", "threshold": {"count": 1, "window_seconds": 60}, "filter": {"action": "report.*"},
            **spec}
    r = client.post(RULES, json=body, headers=tenant.headers)
    assert r.status_code == 201, r.text
    rule: dict[str, Any] = r.json()
    return rule


def settle(ev: Evaluator, rounds: int = 3) -> None:
    """Evaluator passes until nothing is left to count (a few, since notifications follow counting)."""
    for _ in range(rounds):
        ev.run_once()
        time.sleep(0.01)
