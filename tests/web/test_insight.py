"""The audit log page's chart (web/insight.py, issue #13) on both backends: bars add up to the page's
events, each zooms to its own bucket, and the interval keeps a range within about 200 bars."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from fastapi.testclient import TestClient

from auditkeep.storage import Storage
from auditkeep.storage.types import format_timestamp
from auditkeep.web import insight
from auditkeep.web.queries import LogFilter
from tests.conftest import Tenant


def test_choose_interval_keeps_at_most_200_bars() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert insight.choose_interval(at, at + timedelta(hours=1)) == "minute"
    assert insight.choose_interval(at, at + timedelta(hours=4)) == "hour"
    assert insight.choose_interval(at, at + timedelta(days=7)) == "hour"
    assert insight.choose_interval(at, at + timedelta(days=30)) == "day"


def test_bars_add_up_and_zoom_to_their_bucket(app_client: TestClient, storage: Storage, tenant: Tenant) -> None:
    """Last 24 hours with status=failure: one bar per hour holding events, counts and failures as stored,
    and each bar's link is the same filters with a custom range of exactly its hour."""
    now = datetime.now(UTC).replace(microsecond=0)
    events = [{"action": "user.login", "user_email": f"u{i % 3}@a.test", "client_ip": "10.0.0.1",
               "url": "https://a.test/login", "status": "failure" if i % 2 else "success",
               "timestamp": format_timestamp(now - timedelta(minutes=7 + 50 * i))} for i in range(12)]
    assert app_client.post("/api/v1/audit_logs", json=events, headers=tenant.headers).status_code == 201
    f = LogFilter(range="24h", action="user.login")
    chart = insight.chart(storage, tenant.org.id, f, now)
    assert chart is not None and chart.interval == "hour"
    assert chart.total == 12 and chart.failures == 6
    assert sum(b.count for b in chart.bars) == 12
    assert {t.value for t in chart.top_actors} == {"u0@a.test", "u1@a.test", "u2@a.test"}
    for bar in chart.bars:
        q = parse_qs(urlsplit(bar.href).query)
        assert q["range"] == ["custom"] and q["action"] == ["user.login"]
        start = datetime.fromisoformat(q["start"][0]).replace(tzinfo=UTC)
        assert datetime.fromisoformat(q["end"][0]).replace(tzinfo=UTC) - start == timedelta(hours=1)
        inside = [e for e in events if start <= datetime.fromisoformat(e["timestamp"]) < start + timedelta(hours=1)]
        assert bar.count == len(inside)
        assert bar.failures == sum(e["status"] == "failure" for e in inside)
        assert 0 <= bar.x < insight.WIDTH and 0 < bar.height <= insight.HEIGHT
