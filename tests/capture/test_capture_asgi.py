"""The ASGI middleware inside a small FastAPI application."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from capture_fakes import ToggleService
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from auditkeep.capture import ASGIAuditMiddleware, RouteInfo, Shipper, annotate

USERS = {"ann-token": ("ann@example.com", 7)}


def build_app(shipper: Shipper, **options: Any) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        token = request.headers.get("Authorization")
        if token in USERS:
            request.state.user = USERS[token]
        return await call_next(request)

    @app.get("/items/{item_id}", name="read_item")
    async def read_item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.delete("/datasources/{ds_id}")
    async def delete_datasource(ds_id: int, request: Request) -> PlainTextResponse:
        annotate(request, action="datasource.delete", object_type="datasource", object_id=ds_id,
                 payload={"cascade": True})
        return PlainTextResponse("gone")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    @app.get("/healthz")
    async def healthz() -> str:
        return "ok"

    def get_user(scope: dict[str, Any]) -> tuple[str, int] | None:
        user: tuple[str, int] | None = scope.get("state", {}).get("user")
        return user

    options.setdefault("get_user", get_user)
    app.add_middleware(ASGIAuditMiddleware, shipper=shipper, **options)
    return app


async def call(app: FastAPI, method: str, url: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("203.0.113.5", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as http:
        return await http.request(method, url, **kwargs)


@pytest.fixture
def shipper(make_shipper: Callable[..., Shipper]) -> Shipper:
    return make_shipper()


def recorded(shipper: Shipper, service: ToggleService) -> list[dict[str, Any]]:
    assert shipper.flush()
    return list(service.stored.values())


@pytest.mark.anyio
async def test_a_request_becomes_one_event(shipper: Shipper, service: ToggleService) -> None:
    app = build_app(shipper)
    response = await call(app, "GET", "/items/42?full=1",
                          headers={"Referer": "http://shop.test/", "User-Agent": "pytest-ua",
                                   "Authorization": "ann-token"})
    assert response.status_code == 200
    [event] = recorded(shipper, service)
    duration = event["payload"].pop("duration_ms")
    assert isinstance(duration, float)
    assert duration >= 0
    assert event.pop("event_uuid")
    assert event.pop("timestamp").endswith("+00:00")
    assert event == {
        "client_ip": "203.0.113.5", "url": "http://shop.test/items/42?full=1", "referer": "http://shop.test/",
        "user_agent": "pytest-ua", "request_type": "GET", "status": "success",
        "action": "GET /items/{item_id}", "source": "capture", "user_email": "ann@example.com", "user_id": 7,
        "payload": {"status_code": 200},
    }


@pytest.mark.anyio
async def test_error_answers_are_failures(shipper: Shipper, service: ToggleService) -> None:
    app = build_app(shipper)
    assert (await call(app, "GET", "/items/not-a-number")).status_code == 422
    assert (await call(app, "GET", "/nowhere")).status_code == 404
    assert (await call(app, "GET", "/boom")).status_code == 500
    events = sorted(recorded(shipper, service), key=lambda e: e["timestamp"])
    assert [(e["status"], e["payload"]["status_code"], e["action"]) for e in events] == [
        ("failure", 422, "GET /items/{item_id}"), ("failure", 404, "GET /nowhere"), ("failure", 500, "GET /boom"),
    ]
    assert all(e["user_email"] is None for e in events)


@pytest.mark.anyio
async def test_actions_come_from_a_route_name_mapping(shipper: Shipper, service: ToggleService) -> None:
    app = build_app(shipper, actions={"read_item": "item.read", "GET /boom": "boom.trigger"})
    await call(app, "GET", "/items/1")
    await call(app, "GET", "/boom")
    await call(app, "GET", "/nowhere")
    assert sorted(e["action"] for e in recorded(shipper, service)) == ["GET /nowhere", "boom.trigger", "item.read"]


@pytest.mark.anyio
async def test_actions_may_come_from_a_callable(shipper: Shipper, service: ToggleService) -> None:
    def action(route: RouteInfo) -> str | None:
        return f"{route.route_name}.{route.method.lower()}" if route.route_name else None

    app = build_app(shipper, actions=action, source="shop")
    await call(app, "GET", "/items/1")
    [event] = recorded(shipper, service)
    assert event["action"] == "read_item.get"
    assert event["source"] == "shop"


@pytest.mark.anyio
async def test_handlers_can_annotate_their_event(shipper: Shipper, service: ToggleService) -> None:
    app = build_app(shipper)
    await call(app, "DELETE", "/datasources/9")
    [event] = recorded(shipper, service)
    assert (event["action"], event["object_type"], event["object_id"]) == ("datasource.delete", "datasource", 9)
    assert event["payload"]["cascade"] is True
    assert event["payload"]["status_code"] == 200


@pytest.mark.anyio
async def test_forwarded_for_is_believed_only_from_trusted_proxies(make_shipper: Callable[..., Shipper],
                                                                   service: ToggleService) -> None:
    trusting = make_shipper()
    app = build_app(trusting, trusted_proxies=["203.0.113.0/24", "10.0.0.0/8"])
    await call(app, "GET", "/items/1", headers={"X-Forwarded-For": "198.51.100.9, 10.1.1.1"})
    [event] = recorded(trusting, service)
    assert event["client_ip"] == "198.51.100.9"

    service.stored.clear()
    untrusting = make_shipper()
    app = build_app(untrusting)
    await call(app, "GET", "/items/1", headers={"X-Forwarded-For": "198.51.100.9"})
    [event] = recorded(untrusting, service)
    assert event["client_ip"] == "203.0.113.5"


@pytest.mark.anyio
async def test_a_peer_that_is_not_an_address_is_recorded_as_unknown(shipper: Shipper,
                                                                    service: ToggleService) -> None:
    app = build_app(shipper)
    transport = httpx.ASGITransport(app=app, client=("testclient", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as http:
        await http.get("/items/1")
    [event] = recorded(shipper, service)
    assert event["client_ip"] == "0.0.0.0"
    assert event["payload"]["peer"] == "testclient"


@pytest.mark.anyio
async def test_excluded_paths_are_not_recorded(shipper: Shipper, service: ToggleService) -> None:
    app = build_app(shipper, exclude_paths=["/healthz"])
    assert (await call(app, "GET", "/healthz")).status_code == 200
    assert recorded(shipper, service) == []


@pytest.mark.anyio
async def test_a_failing_get_user_does_not_fail_the_request(shipper: Shipper, service: ToggleService,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    def get_user(scope: Any) -> tuple[str, int]:
        raise KeyError("no session")

    app = build_app(shipper, get_user=get_user)
    assert (await call(app, "GET", "/items/1")).status_code == 200
    [event] = recorded(shipper, service)
    assert event["user_email"] is None
    assert "get_user raised" in caplog.text


@pytest.mark.anyio
async def test_the_query_string_can_be_left_out(shipper: Shipper, service: ToggleService) -> None:
    app = build_app(shipper, include_query=False)
    await call(app, "GET", "/items/1?token=secret")
    [event] = recorded(shipper, service)
    assert event["url"] == "http://shop.test/items/1"


@pytest.mark.anyio
async def test_lifespan_starts_the_shipper_and_shutdown_flushes_it(make_shipper: Callable[..., Shipper],
                                                                   service: ToggleService, tmp_path: Path) -> None:
    shipper = make_shipper(flush_interval=60)
    app = build_app(shipper)
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        if len(sent) == 1:  # between startup and shutdown, the app serves a request
            await call(app, "GET", "/items/5")
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert [e["url"] for e in service.stored.values()] == ["http://shop.test/items/5"]


@pytest.mark.anyio
async def test_non_ascii_headers_and_paths_are_recorded_faithfully(shipper: Shipper, service: ToggleService) -> None:
    app = build_app(shipper)
    await call(app, "GET", "/nowhere/é?q=é",
               headers={"User-Agent": "Agënt/1".encode(), "Referer": "http://shop.test/é".encode("latin-1")})
    [event] = recorded(shipper, service)
    assert event["url"] == "http://shop.test/nowhere/%C3%A9?q=%C3%A9"
    assert event["user_agent"] == "Agënt/1"  # UTF-8
    assert event["referer"] == "http://shop.test/é"  # latin-1, the fallback
