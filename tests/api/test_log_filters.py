"""GET /api/v1/audit_logs filters, order and validation (issue #4), on both backends."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tenant

URL = "/api/v1/audit_logs"

EVENTS: list[dict[str, Any]] = [
    {"action": "api_key.create", "user_email": "ann@a.test", "user_id": 1, "object_type": "api_key",
     "object_id": 10, "source": "api", "status": "success", "request_type": "POST", "is_support_user": False,
     "client_ip": "10.0.0.1", "url": "https://app.test/keys", "log_entry": "Ann created a key",
     "timestamp": "2024-01-01T00:00:00Z"},
    {"action": "api_key.revoke", "user_email": "bob@a.test", "user_id": 2, "object_type": "api_key",
     "object_id": 10, "source": "web", "status": "failure", "request_type": "DELETE", "is_support_user": True,
     "client_ip": "10.0.1.7", "url": "https://app.test/keys/10", "log_entry": "Bob REVOKED 100% of key_10",
     "timestamp": "2024-01-02T00:00:00Z"},
    {"action": "datasource.delete", "user_email": "ann@a.test", "user_id": 1, "object_type": "datasource",
     "object_id": 42, "source": "api", "status": "failure", "request_type": "DELETE", "is_support_user": None,
     "client_ip": "192.168.5.5", "url": "https://app.test/ds/42?x=50%", "log_entry": "Ann deleted ds",
     "timestamp": "2024-01-03T00:00:00Z"},
    {"action": "api_key", "user_email": "cy@a.test", "user_id": 3, "object_type": "datasource",
     "object_id": 43, "source": "cli", "status": "success", "request_type": "GET", "is_support_user": True,
     "client_ip": "2001:db8::1", "url": "https://app.test/ds/43", "log_entry": "Cy: apikeyX",
     "timestamp": "2024-01-04T00:00:00Z"},
    {"action": "user.login", "user_email": "bob@a.test", "user_id": 2, "object_type": None, "object_id": None,
     "source": "web", "status": "success", "request_type": "POST", "is_support_user": False,
     "client_ip": "10.0.0.200", "url": "https://app.test/login", "log_entry": None,
     "timestamp": "2024-01-02T00:00:00Z"},
]


@pytest.fixture
def seeded(app_client: TestClient, tenant: Tenant) -> list[str]:
    """EVENTS stored in `tenant`'s organization; their uuids."""
    r = app_client.post(URL, json=EVENTS, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return list(r.json()["event_uuids"])


def get(client: TestClient, tenant: Tenant, **params: Any) -> list[dict[str, Any]]:
    r = client.get(URL, params=params, headers=tenant.headers)
    assert r.status_code == 200, r.text
    # The self-audit record of each read is in the log too; these tests look at EVENTS only.
    return [log for log in r.json()["logs"] if log["action"] != "audit_logs.read"]


def indices(logs: list[dict[str, Any]], uuids: list[str]) -> list[int]:
    return [uuids.index(log["event_uuid"]) for log in logs]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"action": "api_key.create"}, [0]),
        ({"action": "api_key.*"}, [0, 1]),  # a prefix: "api_key" itself has no dot after it
        ({"action": "api_key*"}, [0, 1, 3]),
        ({"action": "*"}, [0, 1, 4, 2, 3]),
        ({"action": "api_key"}, [3]),
        ({"user_email": "ann@a.test"}, [0, 2]),
        ({"user_id": 2}, [1, 4]),
        ({"object_type": "datasource"}, [2, 3]),
        ({"object_id": 10}, [0, 1]),
        ({"source": "web"}, [1, 4]),
        ({"status": "failure"}, [1, 2]),
        ({"status": "success"}, [0, 4, 3]),
        ({"request_type": "DELETE"}, [1, 2]),
        ({"is_support_user": "true"}, [1, 3]),
        ({"is_support_user": "false"}, [0, 4]),
        ({"client_ip": "10.0.0.1"}, [0]),
        ({"client_ip": "10.0.0.0/24"}, [0, 4]),
        ({"client_ip": "10.0.0.0/8"}, [0, 1, 4]),
        ({"client_ip": "10.0.0.9/16"}, [0, 1, 4]),  # host bits are ignored
        ({"client_ip": "2001:db8::/32"}, [3]),
        ({"client_ip": "::ffff:10.0.0.1"}, []),  # IPv6 ranges never match IPv4 addresses
        ({"client_ip": "0.0.0.0/0"}, [0, 1, 4, 2]),
        ({"q": "revoked"}, [1]),  # case-insensitive
        ({"q": "100%"}, [1]),  # LIKE wildcards are literal
        ({"q": "key_1"}, [1]),
        ({"q": "key_"}, [1]),
        ({"q": "apikey"}, [3]),  # "_" does not match any character
        ({"q": "50%"}, [2]),  # matches the url
        ({"q": "/login"}, [4]),
        ({"q": "nothing like this"}, []),
    ],
)
def test_each_filter_alone(app_client: TestClient, tenant: Tenant, seeded: list[str], params: dict[str, Any],
                           expected: list[int]) -> None:
    """Each filter returns exactly its matches, in timestamp-then-seq order."""
    assert indices(get(app_client, tenant, **params), seeded) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"user_email": "ann@a.test", "status": "failure"}, [2]),
        ({"action": "api_key.*", "is_support_user": "true"}, [1]),
        ({"object_type": "api_key", "object_id": 10, "source": "web"}, [1]),
        ({"client_ip": "10.0.0.0/8", "request_type": "POST"}, [0, 4]),
        ({"user_id": 2, "q": "revoked", "status": "failure", "client_ip": "10.0.1.7"}, [1]),
        ({"source": "api", "request_type": "DELETE", "action": "datasource.*"}, [2]),
        ({"user_email": "ann@a.test", "user_id": 2}, []),
        ({"action": "api_key*", "start_date": "2024-01-02T00:00:00Z", "end_date": "2024-01-04T00:00:00Z"}, [1]),
    ],
)
def test_filters_combine_with_and(app_client: TestClient, tenant: Tenant, seeded: list[str],
                                  params: dict[str, Any], expected: list[int]) -> None:
    assert indices(get(app_client, tenant, **params), seeded) == expected


def test_order_desc_reverses_timestamp_then_seq(app_client: TestClient, tenant: Tenant, seeded: list[str]) -> None:
    assert indices(get(app_client, tenant, order="desc"), seeded) == [3, 2, 4, 1, 0]
    assert indices(get(app_client, tenant, order="asc"), seeded) == [0, 1, 4, 2, 3]


def test_filters_never_cross_organizations(app_client: TestClient, tenant: Tenant, seeded: list[str],
                                           other_tenant: Tenant) -> None:
    assert get(app_client, other_tenant, user_email="ann@a.test") == []
    assert get(app_client, other_tenant, client_ip="0.0.0.0/0", limit=5) == []


@pytest.fixture
def other_tenant(storage: Any) -> Tenant:
    from tests.conftest import make_tenant

    return make_tenant(storage)


def test_include_integrity_adds_seq_and_hashes(app_client: TestClient, tenant: Tenant, seeded: list[str]) -> None:
    logs = get(app_client, tenant, include="integrity", user_email="cy@a.test")
    assert len(logs) == 1
    assert set(logs[0]) >= {"seq", "prev_hash", "hash", "personal_salt", "personal_commitment"} and len(logs[0]) == 22
    assert logs[0]["seq"] == 4


def test_self_audit_records_the_query(app_client: TestClient, tenant: Tenant, seeded: list[str]) -> None:
    """The audit_logs.read event says what was asked for."""
    get(app_client, tenant, user_email="ann@a.test", limit=3)
    r = app_client.get(URL, params={"action": "audit_logs.read", "order": "desc", "limit": 2}, headers=tenant.headers)
    reads = r.json()["logs"]
    assert reads[1]["payload"]["query"] == {"user_email": "ann@a.test", "limit": "3"}


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"format": "xml"}, "format"),
        ({"include": "everything"}, "include"),
        ({"is_support_user": "perhaps"}, "is_support_user"),
        ({"user_id": "x"}, "user_id"),
        ({"object_id": 2**60}, "object_id"),
        ({"client_ip": "10.0.0.300"}, "client_ip"),
        ({"client_ip": "10.0.0.0/33"}, "client_ip"),
        ({"client_ip": "example.com"}, "client_ip"),
        ({"q": ""}, "q"),
        ({"user_email": "a\x00b"}, "user_email"),
        ({"after_seq": -1}, "after_seq"),
        ({"after_seq": 2**63}, "after_seq"),
        ({"after_seq": 3, "order": "asc"}, "order"),
        ({"after_seq": 3, "cursor": "abc", "limit": 2}, "cursor"),
        ({"cursor": "not-a-cursor", "limit": 2}, "cursor"),
        ({"cursor": "eyJ2IjoxfQ", "limit": 2}, "cursor"),  # {"v":1}: well-formed base64, no position
    ],
)
def test_bad_parameters_are_422_in_fastapi_shape(app_client: TestClient, tenant: Tenant, params: dict[str, Any],
                                                 loc: str) -> None:
    r = app_client.get(URL, params=params, headers=tenant.headers)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail
    assert detail[0]["loc"] == ["query", loc]
    assert {"type", "loc", "msg"} <= set(detail[0])


def test_a_cursor_of_the_other_order_or_without_limit_is_422(app_client: TestClient, tenant: Tenant,
                                                             seeded: list[str]) -> None:
    r = app_client.get(URL, params={"limit": 2}, headers=tenant.headers)
    cursor = r.links["next"]["url"].split("cursor=")[1]
    for params in ({"limit": 2, "order": "desc", "cursor": cursor}, {"cursor": cursor}):
        r = app_client.get(URL, params=params, headers=tenant.headers)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_unknown_query_parameters_are_ignored_as_before(app_client: TestClient, tenant: Tenant,
                                                        seeded: list[str]) -> None:
    assert len(get(app_client, tenant, colour="blue")) == 5


@pytest.mark.parametrize(
    "params",
    [{"action": "api_key*"}, {"action": "*"}, {"client_ip": "10.0.0.0/8"}, {"client_ip": "0.0.0.0/0"},
     {"action": "api_key*", "client_ip": "10.0.0.0/8", "order": "desc"}, {"action": "a*", "source": "web"}],
)
@pytest.mark.parametrize("limit", [None, 1, 2])
def test_ranges_give_the_same_pages_whichever_plan(app_client: TestClient, tenant: Tenant, seeded: list[str],
                                                   monkeypatch: pytest.MonkeyPatch, params: dict[str, Any],
                                                   limit: int | None) -> None:
    """A prefix or CIDR range read by sorting its matches, or as one ordered scan per distinct value
    (what SQLite does once a range holds more than PROBE_CAP events), or by a timestamp walk
    (more than MAX_BRANCHES values) pages the same."""
    import auditkeep.storage.queries as queries

    def pages() -> list[str]:
        # Flattened: each walk's own audit_logs.read events match "*" and shift later walks' pages.
        out: list[str] = []
        query: dict[str, Any] = {**params, **({"limit": limit} if limit else {})}
        url: str | None = None
        while True:
            r = app_client.get(url or URL, params=None if url else query, headers=tenant.headers)
            assert r.status_code == 200, r.text
            out.extend(log["event_uuid"] for log in r.json()["logs"] if log["action"] != "audit_logs.read")
            url = r.links.get("next", {}).get("url")
            if url is None:
                return out

    sorted_plan = pages()
    monkeypatch.setattr(queries, "PROBE_CAP", 1)
    assert pages() == sorted_plan
    monkeypatch.setattr(queries, "MAX_BRANCHES", 1)
    assert pages() == sorted_plan


FILTERS = ("action", "user_email", "user_id", "object_type", "object_id", "source", "status", "request_type",
           "is_support_user", "client_ip", "q")
FILTERED_ROUTES = (URL, "/api/v1/audit_logs/stats", "/api/v1/evidence")


def test_the_read_its_stats_and_evidence_describe_the_same_filter_parameters(app_client: TestClient) -> None:
    """Each of the three routes lists every filter of the read, with the same schema and description."""
    paths = app_client.app.openapi()["paths"]  # type: ignore[attr-defined]
    described = [{p["name"]: p for p in paths[route]["get"]["parameters"] if p["name"] in FILTERS}
                 for route in FILTERED_ROUTES]
    assert sorted(described[0]) == sorted(FILTERS)
    assert described[1] == described[0]
    assert described[2] == described[0]


@pytest.mark.parametrize(
    "params",
    [{"user_id": "x"}, {"object_id": 2**60}, {"is_support_user": "perhaps"}, {"client_ip": "10.0.0.0/33"},
     {"client_ip": "example.com"}, {"q": "ab"}, {"user_email": "a\x00b"}, {"action": "a" * 257},
     {"source": "s" * 1025}],
)
def test_a_bad_filter_gets_the_same_422_from_the_read_its_stats_and_evidence(
    app_client: TestClient, tenant: Tenant, params: dict[str, Any]
) -> None:
    """The same bad filter value is refused by all three routes with the same error body."""
    answers = [app_client.get(route, params=params, headers=tenant.headers) for route in FILTERED_ROUTES]
    assert [r.status_code for r in answers] == [422, 422, 422], [r.text for r in answers]
    first = answers[0].json()["detail"]
    assert first[0]["loc"] == ["query", next(iter(params))]
    assert answers[1].json()["detail"] == first
    assert answers[2].json()["detail"] == first
