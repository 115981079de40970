"""GET /api/v1/audit_logs/stats (issue #13): counts equal those computed from a full export of the same
range and filters, on random data, on both backends; organizations are isolated."""

from __future__ import annotations

import random
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tenant, make_tenant

URL = "/api/v1/audit_logs"
STATS = "/api/v1/audit_logs/stats"
START = datetime(2024, 3, 1, 22, 0, tzinfo=UTC)
RANGE = {"start_date": "2024-03-01T00:00:00Z", "end_date": "2024-03-05T00:00:00Z"}
_TRUNC = {"minute": 16, "hour": 13, "day": 10}
_PAD = {"minute": ":00.000000Z", "hour": ":00:00.000000Z", "day": "T00:00:00.000000Z"}


def random_events(seed: int, n: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        at = START + timedelta(seconds=rng.randrange(0, 2 * 86_400), microseconds=rng.randrange(1_000_000))
        out.append({
            "action": rng.choice(["user.login", "user.logout", "api_key.create", "api_key.revoke", "report.run"]),
            "user_email": rng.choice(["ann@a.test", "Bob@a.test", "bob@a.test", "cy@a.test", None]),
            "status": rng.choice(["success", "success", "failure", "denied", None]),
            "source": rng.choice(["api", "web", "cli"]),
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
    return {"buckets": buckets, "top": sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:10]}


@pytest.mark.parametrize("params", [
    {},
    {"status": "failure"},
    {"action": "api_key.*"},
    {"user_email": "BOB@a.test"},
    {"client_ip": "10.0.0.0/24", "source": "web"},
    {"q": "failed"},
])
@pytest.mark.parametrize(("interval", "group_by"), [("hour", "action"), ("day", "user_email"),
                                                    ("minute", "client_ip"), ("hour", "status"),
                                                    ("day", "source")])
def test_stats_equal_counts_from_a_full_export(app_client: TestClient, tenant: Tenant, params: dict[str, str],
                                               interval: str, group_by: str) -> None:
    """Buckets, failures and top values equal what the export of the same range and filters holds."""
    _seed(app_client, tenant, random_events(zlib.crc32(f"{interval}{group_by}{params}".encode()), 300))
    logs = _export(app_client, tenant, params)
    assert logs, "the filter matches something"
    r = app_client.get(STATS, params=RANGE | params | {"interval": interval, "group_by": group_by},
                       headers=tenant.headers)
    assert r.status_code == 200, r.text
    got = r.json()
    want = _expected(logs, interval, group_by)
    assert got["buckets"] == want["buckets"]
    assert sum(b["count"] for b in got["buckets"]) == len(logs)
    # Ties may sort differently by collation; the counts of each rank and the values' counts must agree.
    assert [t["count"] for t in got["top"]] == [n for _, n in want["top"]]
    all_values = Counter(str(log[group_by]) for log in logs if log[group_by] is not None)
    assert all(all_values[t["value"]] == t["count"] for t in got["top"])


def test_stats_of_one_organization_never_count_anothers(app_client: TestClient, storage: Any,
                                                        tenant: Tenant) -> None:
    """Another organization's events in the same range are not counted, and its values are not in top."""
    other = make_tenant(storage)
    _seed(app_client, tenant, random_events(1, 50))
    _seed(app_client, other, [e | {"action": "other.only"} for e in random_events(2, 70)])
    r = app_client.get(STATS, params=RANGE | {"interval": "day"}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert sum(b["count"] for b in r.json()["buckets"]) == 50
    assert "other.only" not in {t["value"] for t in r.json()["top"]}


def test_stats_read_is_recorded_and_needs_the_read_scope(app_client: TestClient, tenant: Tenant) -> None:
    """A stats request is an audit_logs.read event (mode stats); a key without audit_logs:read gets 403."""
    r = app_client.get(STATS, params={"interval": "day", "status": "failure"}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    logs = app_client.get(URL, params={"action": "audit_logs.read", "order": "desc", "limit": 5},
                          headers=tenant.headers).json()["logs"]
    stats_read = next(log for log in logs if log["payload"].get("mode") == "stats")
    assert stats_read["payload"]["query"] == {"status": "failure"}
    assert stats_read["payload"]["interval"] == "day"
    from auditkeep.auth.principals import Scope

    _, key = tenant.service_account(Scope.WRITE)
    r = app_client.get(STATS, headers={"Authorization": f"Key {key}"})
    assert r.status_code == 403
    assert "detail" in r.json()


@pytest.mark.parametrize("params", [{"interval": "week"}, {"group_by": "payload"}, {"client_ip": "nope"},
                                    {"q": "ab"}])
def test_bad_parameters_are_422_in_fastapis_shape(app_client: TestClient, tenant: Tenant,
                                                  params: dict[str, str]) -> None:
    r = app_client.get(STATS, params=params, headers=tenant.headers)
    assert r.status_code == 422
    assert isinstance(r.json()["detail"], list)


def test_too_many_buckets_is_a_422_naming_interval(app_client: TestClient, tenant: Tenant) -> None:
    """More than MAX_BUCKETS non-empty buckets is refused, naming the parameter to change."""
    from auditkeep.storage import stats

    base = datetime(2024, 5, 1, tzinfo=UTC)
    events = [{"action": "tick", "url": "https://app.test/t", "client_ip": "10.1.1.1",
               "timestamp": (base + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")}
              for i in range(stats.MAX_BUCKETS + 1)]
    _seed(app_client, tenant, events)
    r = app_client.get(STATS, params={"interval": "minute", "start_date": "2024-05-01T00:00:00Z",
                                      "end_date": "2024-06-01T00:00:00Z"}, headers=tenant.headers)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["query", "interval"]
    r = app_client.get(STATS, params={"interval": "hour", "start_date": "2024-05-01T00:00:00Z",
                                      "end_date": "2024-06-01T00:00:00Z"}, headers=tenant.headers)
    assert sum(b["count"] for b in r.json()["buckets"]) == stats.MAX_BUCKETS + 1
