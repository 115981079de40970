"""The WSGI middleware inside a small Flask application (and a bare WSGI one)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from capture_fakes import ToggleService
from flask import Flask, g, request

from auditkeep.capture import Shipper, WSGIAuditMiddleware, annotate

USERS = {"ann-token": ("ann@example.com", 7)}


def build_app(shipper: Shipper, **options: Any) -> Flask:
    app = Flask(__name__)

    @app.before_request
    def authenticate() -> None:
        token = request.headers.get("Authorization")
        if token in USERS:
            g.user = USERS[token]

    @app.get("/items/<int:item_id>")
    def read_item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.delete("/datasources/<int:ds_id>")
    def delete_datasource(ds_id: int) -> str:
        annotate(request, action="datasource.delete", object_type="datasource", object_id=ds_id)
        return "gone"

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    def get_user(environ: dict[str, Any]) -> tuple[str, int] | None:
        # Runs inside Flask's request context, so `g` is available.
        return g.get("user")

    options.setdefault("get_user", get_user)
    app.wsgi_app = WSGIAuditMiddleware(app.wsgi_app, shipper=shipper, **options)  # type: ignore[method-assign]
    return app


@pytest.fixture
def shipper(make_shipper: Callable[..., Shipper]) -> Shipper:
    return make_shipper()


def recorded(shipper: Shipper, service: ToggleService) -> list[dict[str, Any]]:
    assert shipper.flush()
    return sorted(service.stored.values(), key=lambda e: e["timestamp"])


def test_a_request_becomes_one_event(shipper: Shipper, service: ToggleService) -> None:
    app = build_app(shipper)
    response = app.test_client().get(
        "/items/42?full=1", base_url="http://shop.test",
        headers={"Referer": "http://shop.test/", "User-Agent": "pytest-ua", "Authorization": "ann-token"},
        environ_base={"REMOTE_ADDR": "203.0.113.5"},
    )
    assert response.status_code == 200
    [event] = recorded(shipper, service)
    assert isinstance(event["payload"].pop("duration_ms"), float)
    assert event.pop("event_uuid")
    assert event.pop("timestamp").endswith("+00:00")
    assert event == {
        "client_ip": "203.0.113.5", "url": "http://shop.test/items/42?full=1", "referer": "http://shop.test/",
        "user_agent": "pytest-ua", "request_type": "GET", "status": "success",
        "action": "GET /items/<int:item_id>", "source": "capture", "user_email": "ann@example.com",
        "user_id": 7, "payload": {"status_code": 200},
    }


def test_error_answers_are_failures(shipper: Shipper, service: ToggleService) -> None:
    app = build_app(shipper)
    client = app.test_client()
    assert client.get("/nowhere").status_code == 404
    assert client.get("/boom").status_code == 500
    events = recorded(shipper, service)
    assert [(e["status"], e["payload"]["status_code"], e["action"]) for e in events] == [
        ("failure", 404, "GET /nowhere"), ("failure", 500, "GET /boom"),
    ]


def test_an_exception_escaping_the_app_is_recorded_as_500(shipper: Shipper, service: ToggleService) -> None:
    app = build_app(shipper)
    app.testing = True  # Flask now lets the exception through to the server
    with pytest.raises(RuntimeError, match="boom"):
        app.test_client().get("/boom")
    [event] = recorded(shipper, service)
    assert (event["status"], event["payload"]["status_code"]) == ("failure", 500)


def test_actions_come_from_the_endpoint_name(shipper: Shipper, service: ToggleService) -> None:
    app = build_app(shipper, actions={"read_item": "item.read"})
    app.test_client().get("/items/3")
    [event] = recorded(shipper, service)
    assert event["action"] == "item.read"


def test_views_can_annotate_their_event(shipper: Shipper, service: ToggleService) -> None:
    app = build_app(shipper)
    app.test_client().delete("/datasources/9")
    [event] = recorded(shipper, service)
    assert (event["action"], event["object_type"], event["object_id"]) == ("datasource.delete", "datasource", 9)


def test_forwarded_for_is_believed_only_from_trusted_proxies(shipper: Shipper, service: ToggleService) -> None:
    app = build_app(shipper, trusted_proxies=["10.0.0.1"])
    client = app.test_client()
    client.get("/items/1", headers={"X-Forwarded-For": "198.51.100.9"}, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    client.get("/items/2", headers={"X-Forwarded-For": "198.51.100.9"}, environ_base={"REMOTE_ADDR": "10.0.0.2"})
    assert [e["client_ip"] for e in recorded(shipper, service)] == ["198.51.100.9", "10.0.0.2"]


def test_a_lazily_answering_app_is_recorded_when_its_body_is_closed(shipper: Shipper,
                                                                    service: ToggleService) -> None:
    closed: list[bool] = []

    class Body:
        def __init__(self, start_response: Callable[..., Any]) -> None:
            self.start_response = start_response

        def __iter__(self) -> Iterator[bytes]:
            self.start_response("201 Created", [("Content-Type", "text/plain")])
            yield b"made"

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Body:
        return Body(start_response)

    middleware = WSGIAuditMiddleware(app, shipper=shipper)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/things", "SERVER_NAME": "api.test", "SERVER_PORT": "8080",
               "wsgi.url_scheme": "http", "REMOTE_ADDR": "::1", "QUERY_STRING": ""}
    body = middleware(environ, lambda status, headers, exc_info=None: lambda data: None)
    assert shipper.stats.captured == 0
    assert b"".join(body) == b"made"
    body.close()  # type: ignore[attr-defined]
    [event] = recorded(shipper, service)
    assert closed == [True]
    assert (event["url"], event["client_ip"], event["payload"]["status_code"]) == (
        "http://api.test:8080/things", "::1", 201)


def test_non_ascii_headers_and_paths_are_recorded_faithfully(shipper: Shipper, service: ToggleService) -> None:
    app = build_app(shipper)
    environ = {"HTTP_USER_AGENT": "Agënt/1".encode().decode("latin-1")}  # as PEP 3333 hands it over
    app.test_client().get("/nowhere/é?q=é", base_url="http://shop.test", environ_base=environ)
    [event] = recorded(shipper, service)
    assert event["url"] == "http://shop.test/nowhere/%C3%A9?q=%C3%A9"
    assert event["user_agent"] == "Agënt/1"
