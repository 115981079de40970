"""The read's parameters parsed the short way (api/query_params.plain_log_params, issue #11) mean exactly what
FastAPI makes of them, every value it is unsure of is left to FastAPI, and the 422s stay FastAPI's."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from auditkeep.api import errors
from auditkeep.api.app import create_app
from auditkeep.api.query_params import (
    _PLAIN_FILTERS,
    _PLAIN_OPTIONS,
    Cursor,
    LogParams,
    Unsure,
    plain_datetime,
    plain_log_params,
)
from auditkeep.api.routes.audit_logs import get_audit_logs
from auditkeep.ingest.read_rules import WalkMark
from auditkeep.settings import Settings
from auditkeep.storage import Storage
from auditkeep.storage.queries import Position
from tests.conftest import Tenant

URL = "/api/v1/audit_logs"
TS = "2024-03-01T10:00:00.000000Z"
CURSOR = Cursor(Position(TS, 41), 99, True).encode()
ASC_CURSOR = Cursor(Position(TS, 41), 99, False).encode()
SIGNED = Cursor(Position(TS, 41), 99, True, WalkMark("0190e0a0-0000-7000-8000-000000000001", "ab" * 16, 1_700_000_000),
                filtered=True).encode(b"k" * 32)

# Query strings as clients send them, and as they should not: every parameter, its bounds and just past them,
# spellings Pydantic coerces, values the logic refuses. Each is compared between FastAPI and the short way.
QUERIES = [
    "", "limit=100&order=desc", "limit=100&order=asc", "limit=1", "limit=10000", "limit=10001", "limit=0",
    "limit=-1", "limit=010", "limit=+5", "limit=%205", "limit=5%20", "limit=1_0", "limit=1e2", "limit=5.0",
    "limit=abc", "limit=", "limit=5&limit=7", "order=DESC", "order=", "order=up",
    f"limit=100&order=desc&cursor={CURSOR}", f"limit=100&cursor={ASC_CURSOR}", f"limit=100&order=asc&cursor={CURSOR}",
    f"cursor={CURSOR}&order=desc", f"limit=100&order=desc&cursor={SIGNED}", "limit=10&cursor=garbage",
    "limit=10&cursor=" + "a" * 513, "limit=10&cursor=", f"limit=10&order=desc&cursor={CURSOR}&after_seq=3",
    "after_seq=0", "after_seq=12&limit=50", f"after_seq={2**63 - 1}", f"after_seq={2**63}", "after_seq=-1",
    "after_seq=007", "after_seq=5&order=asc", "include=integrity", "include=INTEGRITY", "include=",
    "format=json", "format=ndjson", "format=csv", "format=ocsf", "format=xml", "format=",
    "action=user.login", "action=user.*", "action=*", "action=" + "a" * 256, "action=" + "a" * 257, "action=",
    "user_email=a%40b.test", "user_email=" + "e" * 1024, "user_email=" + "e" * 1025, "user_email=a%00b",
    "user_email=%C3%A9l%C3%A8ve%40x.test", "user_email=", "user_id=42", "user_id=-42", "user_id=0", "user_id=-0",
    "user_id=9007199254740991", "user_id=9007199254740992", "user_id=-9007199254740991", "user_id=4.0",
    "user_id=x", "object_id=7", "object_id=007", "object_type=session", "object_type=s%00",
    "source=web", "status=failure", "request_type=POST", "is_support_user=true", "is_support_user=false",
    "is_support_user=True", "is_support_user=1", "is_support_user=no", "is_support_user=maybe",
    "client_ip=10.0.0.1", "client_ip=10.0.0.0/8", "client_ip=2001:db8::/32", "client_ip=%2010.0.0.1",
    "client_ip=not-an-ip", "client_ip=" + "1" * 65, "q=abc", "q=ab", "q=" + "x" * 1024, "q=" + "x" * 1025,
    "q=a%00c", "start_date=2024-01-01T00:00:00Z", "start_date=2024-01-01T00:00:00%2B02:00",
    "start_date=2024-01-01T00:00:00+02:00", "start_date=2024-01-01", "start_date=2024-01-01T00:00:00",
    "start_date=0001-01-01T00:00:00%2B01:00", "start_date=garbage", "start_date=",
    "end_date=2024-02-01T00:00:00Z&start_date=2024-01-01T00:00:00Z",
    "end_date=2024-01-01T00:00:00Z&start_date=2024-02-01T00:00:00Z", "unknown=1&limit=3",
    "action=user.login&user_email=a%40b.test&user_id=3&object_type=t&object_id=4&source=api&status=success"
    "&request_type=GET&is_support_user=false&client_ip=10.1.0.0/16&q=login&order=desc&limit=25&include=integrity"
    "&format=ndjson&start_date=2024-01-01T00:00:00Z&end_date=2025-01-01T00:00:00Z",
]
HEADERS: list[dict[str, str]] = [
    {}, {"Accept": "text/csv"}, {"Accept": "application/x-ndjson;q=0.5, application/json"},
    {"Accept-Encoding": "gzip, zstd;q=0.5"}, {"Accept": "", "Accept-Encoding": ""},
]


def _seen(params: LogParams, start: datetime | None, end: datetime | None) -> dict[str, Any]:
    """What the endpoint is given, as comparable text."""
    return {"params": repr(params), "start": None if start is None else start.isoformat(),
            "end": None if end is None else end.isoformat()}


@pytest.fixture(scope="module")
def probe() -> Iterator[TestClient]:
    """An app with two routes: the read's declared parameters resolved by FastAPI (`/declared`, the endpoint's
    own signature), and the same request parsed the short way (`/plain`); both answer what they parsed."""
    app = FastAPI()
    app.state.storage = None
    errors.install(app)

    @functools.wraps(get_audit_logs)
    async def declared(**values: Any) -> JSONResponse:
        return JSONResponse(_seen(values["params"], values["start_date"], values["end_date"]))

    async def plain(request: Request) -> JSONResponse:
        query = request.query_params
        try:
            params = plain_log_params(query, request.headers)
            start, end = plain_datetime(query.get("start_date")), plain_datetime(query.get("end_date"))
        except Unsure:
            return JSONResponse({"unsure": True}, status_code=299)
        return JSONResponse(_seen(params, start, end))

    app.add_api_route("/declared", declared, methods=["GET"])
    app.add_api_route("/plain", plain, methods=["GET"])
    with TestClient(app) as client:
        yield client


def test_the_short_way_means_what_fastapi_means(probe: TestClient) -> None:
    """For every query and headers above, the short way is unsure, or it gives the endpoint what FastAPI
    would, or it refuses with the very 422 FastAPI gives."""
    taken = 0
    for query in QUERIES:
        for headers in HEADERS:
            plain = probe.get(f"/plain?{query}", headers=headers)
            if plain.status_code == 299:
                continue
            taken += 1
            declared = probe.get(f"/declared?{query}", headers=headers)
            assert (plain.status_code, plain.json()) == (declared.status_code, declared.json()), (query, headers)
    assert taken >= 0.5 * len(QUERIES) * len(HEADERS)


def test_the_short_way_parses_every_parameter_the_read_declares(app_client: TestClient) -> None:
    """A parameter added to the read (or to its filters) and not to the short way would be dropped there."""
    operation = app_client.app.openapi()["paths"][URL]["get"]  # type: ignore[attr-defined]
    declared = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    assert declared == {*_PLAIN_FILTERS, *_PLAIN_OPTIONS, "start_date", "end_date"}


@pytest.mark.parametrize("query", [
    "limit=100&order=desc", f"limit=100&order=desc&cursor={CURSOR}", "after_seq=12&limit=50",
    "action=user.*&user_email=a%40b.test&user_id=-3&is_support_user=true&client_ip=10.0.0.0/8&q=abc&format=csv",
    "include=integrity&start_date=2024-01-01T00:00:00%2B02:00&end_date=2024-02-01T00:00:00Z",
])
def test_what_clients_send_is_taken_the_short_way(probe: TestClient, query: str) -> None:
    """The reads of SDKs, exports and pollers do not wait for FastAPI's dependency machinery."""
    assert probe.get(f"/plain?{query}").status_code == 200


@pytest.fixture
def read_app(storage: Storage, settings: Settings) -> Iterator[tuple[FastAPI, TestClient]]:
    app = create_app(settings.model_copy(update={"database_url": storage.url}), storage=storage)
    with TestClient(app) as client:
        yield app, client


def _unused() -> None:
    """A dependency nothing depends on: overriding it sends every read through FastAPI's own handler."""


@pytest.mark.parametrize("query", [
    "client_ip=not-an-ip", "user_email=a%00b", "q=a%00c", "after_seq=5&order=asc", "limit=10&cursor=garbage",
    f"cursor={CURSOR}&order=desc", f"limit=10&order=asc&cursor={CURSOR}", f"limit=10&order=desc&cursor={SIGNED}",
    "end_date=2024-01-01T00:00:00Z&start_date=2024-02-01T00:00:00Z", "limit=abc&client_ip=bad",
    "limit=abc&order=sideways&start_date=2024-01-01", "user_id=9007199254740992&object_id=x",
])
def test_the_route_refuses_as_fastapi_does(read_app: tuple[FastAPI, TestClient], tenant: Tenant, query: str) -> None:
    """Through the whole app, a refused read gets the same answer with the short way as through FastAPI's
    own handler (a cursor signed with another key is refused by the read itself, after the key)."""
    app, client = read_app
    short = client.get(f"{URL}?{query}", headers=tenant.headers)
    app.dependency_overrides[_unused] = _unused
    try:
        full = client.get(f"{URL}?{query}", headers=tenant.headers)
    finally:
        app.dependency_overrides.clear()
    assert short.status_code == 422, short.text
    assert (short.status_code, short.json(), short.headers.get("content-type")) == (
        full.status_code, full.json(), full.headers.get("content-type"))


def test_the_route_takes_the_short_way(read_app: tuple[FastAPI, TestClient], tenant: Tenant,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain read does not resolve FastAPI's dependencies; one with a value FastAPI must judge does."""
    import fastapi.routing

    solved: list[object] = []
    solve = fastapi.routing.solve_dependencies

    async def counting(**kwargs: Any) -> Any:
        solved.append(kwargs["dependant"].call)
        return await solve(**kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    _app, client = read_app
    assert client.get(f"{URL}?limit=100&order=desc", headers=tenant.headers).status_code == 200
    assert solved == []
    assert client.get(f"{URL}?limit=+100&order=desc", headers=tenant.headers).status_code == 200
    assert get_audit_logs in solved
