"""Realistic sample events for `auditkeep demo --sample-events N`: a small team's week in a BI tool.

A few users sign in (some sign-ins fail), work with datasources and reports, make and revoke API keys; a
vendor's support engineer looks in now and then. Addresses come from the documentation ranges (RFC 5737,
RFC 3849), so nothing here names a real network. The events go through the same validation and recording
as a POST to /api/v1/audit_logs, so they are chained and verify like any other.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.schemas.events import MAX_EVENTS_PER_REQUEST
from auditkeep.storage import Storage
from auditkeep.storage.types import format_timestamp

SPAN = timedelta(days=7)
APP = "https://app.demo.example"
_BROWSERS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 "
    "Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
)
_SCRIPT_AGENT = "python-httpx/0.27.0"


@dataclass(frozen=True, slots=True)
class _Person:
    user_id: int
    email: str
    ip: str
    browser: str
    is_support: bool = False


_PEOPLE = (
    _Person(101, "maria.lopez@demo.example", "203.0.113.24", _BROWSERS[0]),
    _Person(102, "sam.okafor@demo.example", "198.51.100.77", _BROWSERS[1]),
    _Person(103, "jin.park@demo.example", "2001:db8:4a::15", _BROWSERS[2]),
    _Person(104, "priya.nair@demo.example", "192.0.2.140", _BROWSERS[1]),
    _Person(900, "support@vendor.example", "198.51.100.200", _BROWSERS[0], is_support=True),
)
_STRANGER_IPS = ("203.0.113.250", "192.0.2.66", "2001:db8:bad::7")
_DATASOURCES = {7: "warehouse (PostgreSQL)", 8: "events (ClickHouse)", 9: "billing (Snowflake)"}
_REPORTS = {31: "Weekly revenue", 32: "Churn by cohort", 33: "Signup funnel", 34: "Support backlog"}


def _event(rng: random.Random, person: _Person, when: datetime) -> dict[str, Any]:
    """One event of `person` at `when`, its kind drawn with weights a real week roughly has."""
    kind = rng.choices(
        ("login", "login_failed", "report_view", "report_edit", "report_export", "datasource_query",
         "datasource_edit", "api_key"),
        weights=(18, 4, 30, 8, 6, 22, 4, 3),
    )[0]
    base: dict[str, Any] = {
        "client_ip": person.ip, "is_support_user": person.is_support, "timestamp": format_timestamp(when),
        "user_agent": person.browser, "user_email": person.email, "user_id": person.user_id,
        "source": "web", "status": "success",
    }
    if kind in ("login", "login_failed"):
        failed = kind == "login_failed"
        return base | {
            "action": "user.login", "url": f"{APP}/signin", "request_type": "POST", "object_type": "user",
            "object_id": person.user_id, "status": "failure" if failed else "success",
            "log_entry": f"{'Failed sign-in (wrong password)' if failed else 'Signed in'}: {person.email}"
            + (" (vendor support access)" if person.is_support and not failed else ""),
            "payload": {"method": "password", "mfa": not failed} if not failed else {"reason": "bad_password"},
        }
    if kind.startswith("report"):
        rid = rng.choice(list(_REPORTS))
        verb = {"report_view": "view", "report_edit": "update", "report_export": "export"}[kind]
        return base | {
            "action": f"report.{verb}", "object_type": "report", "object_id": rid,
            "url": f"{APP}/reports/{rid}" + ("/export.csv" if verb == "export" else ""),
            "referer": f"{APP}/reports", "request_type": "GET" if verb != "update" else "PUT",
            "log_entry": f"Report {_REPORTS[rid]!r} {'viewed' if verb == 'view' else verb + 'ed'}",
            "payload": {"rows": rng.randint(40, 25_000)} if verb == "export" else None,
        }
    if kind.startswith("datasource"):
        did = rng.choice(list(_DATASOURCES))
        query = kind == "datasource_query"
        timed_out = query and rng.random() < 0.08
        source = _DATASOURCES[did]
        return base | {
            "action": "datasource.query" if query else "datasource.update", "object_type": "datasource",
            "object_id": did, "url": f"{APP}/api/datasources/{did}/" + ("query" if query else "settings"),
            "request_type": "POST" if query else "PATCH", "source": "api" if query else "web",
            "status": "failure" if timed_out else "success",
            "log_entry": (f"Query on {source} timed out after 30 s" if timed_out
                          else f"Query on {source}" if query else f"Settings of {source} changed"),
            "payload": {"duration_ms": 30_000 if timed_out else rng.randint(12, 4_800)} if query else
            {"changed": ["refresh_interval"]},
        }
    created = rng.random() < 0.6
    return base | {
        "action": "api_key.create" if created else "api_key.revoke", "object_type": "api_key",
        "object_id": rng.randint(500, 599), "url": f"{APP}/settings/api-keys",
        "request_type": "POST" if created else "DELETE",
        "log_entry": f"API key {'created' if created else 'revoked'} by {person.email}",
        "payload": {"name": rng.choice(("dbt sync", "notebook", "ci exporter"))},
    }


def _stranger(rng: random.Random, when: datetime) -> dict[str, Any]:
    """A sign-in attempt for an account that does not exist, from an address nobody on the team uses."""
    email = rng.choice(("admin@demo.example", "root@demo.example", "test@demo.example"))
    return {
        "action": "user.login", "client_ip": rng.choice(_STRANGER_IPS), "timestamp": format_timestamp(when),
        "url": f"{APP}/signin", "request_type": "POST", "source": "web", "status": "failure",
        "user_agent": _SCRIPT_AGENT, "user_email": email, "is_support_user": False,
        "log_entry": f"Failed sign-in (unknown account): {email}", "payload": {"reason": "unknown_account"},
    }


def sample_events(count: int, now: datetime, seed: int = 9) -> list[dict[str, Any]]:
    """`count` events spread over the 7 days before `now`, oldest first (ingest bodies, before validation)."""
    # A seeded generator gives the same week each time (screenshots and docs stay comparable); no secrets here.
    rng = random.Random(seed)  # noqa: S311
    span_us = int(SPAN / timedelta(microseconds=1))
    times = sorted(now - timedelta(microseconds=rng.randrange(60_000_000, span_us)) for _ in range(count))
    out: list[dict[str, Any]] = []
    for when in times:
        roll = rng.random()
        if roll < 0.04:
            out.append(_stranger(rng, when.astimezone(UTC)))
            continue
        person = _PEOPLE[-1] if roll < 0.09 else rng.choice(_PEOPLE[:-1])
        out.append({k: v for k, v in _event(rng, person, when.astimezone(UTC)).items() if v is not None})
    return out


def fill(storage: Storage, org_id: int, count: int) -> int:
    """Record `count` sample events in `org_id`'s log, through the ingest path; returns how many."""
    now = datetime.now(UTC)
    events = sample_events(count, now)
    for start in range(0, len(events), MAX_EVENTS_PER_REQUEST):
        body = orjson.dumps(events[start : start + MAX_EVENTS_PER_REQUEST])
        record_events(storage, org_id, parse_events(body, now))
    return len(events)
