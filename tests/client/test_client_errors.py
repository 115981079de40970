"""Typed errors for each failure, and which failures are retried."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sdk_fakes import SOURCE, Backend, Flaky, NoWait

from auditkeep.client import (
    APIStatusError,
    AuditKeepClientError,
    AuthenticationError,
    Client,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TransportError,
    ValidationError,
)
from auditkeep.client._retry import parse_retry_after


def answering(status: int, body: Any = None,
              headers: dict[str, str] | None = None) -> tuple[Client, list[int]]:
    """A client whose service always answers `status`, and the list that counts its requests."""
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(status, json=body if body is not None else {"detail": "nope"}, headers=headers)

    return Client("k", "http://audit.test", transport=httpx.MockTransport(handler), retry=NoWait()), calls


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, AuthenticationError), (403, PermissionDeniedError), (404, NotFoundError), (409, ConflictError),
     (413, PayloadTooLargeError), (422, ValidationError), (400, APIStatusError)],
)
def test_other_4xx_raise_their_typed_error_without_a_retry(status: int, error: type[APIStatusError]) -> None:
    client, calls = answering(status)
    with client, pytest.raises(error) as caught:
        client.publish({"client_ip": "10.0.0.1", "url": "/x"})
    assert type(caught.value) is error
    assert caught.value.status_code == status
    assert caught.value.detail == "nope"
    assert calls == [1]


def test_every_error_hangs_from_one_root() -> None:
    for cls in (AuthenticationError, PermissionDeniedError, ConflictError, PayloadTooLargeError,
                ValidationError, RateLimitError, ServerError, TransportError):
        assert issubclass(cls, AuditKeepClientError)


def test_5xx_is_retried_then_raised_as_server_error() -> None:
    client, calls = answering(503)
    with client, pytest.raises(ServerError) as caught:
        client.get_audit_logs()
    assert caught.value.status_code == 503
    assert len(calls) == 1 + RetryPolicy().max_retries


def test_429_is_retried_honoring_retry_after_then_raised_with_the_hint() -> None:
    client, calls = answering(429, headers={"Retry-After": "7"})
    with client, pytest.raises(RateLimitError) as caught:
        client.get_audit_logs()
    assert caught.value.retry_after == 7.0
    assert client.retry.waits == [7.0] * 5  # type: ignore[attr-defined]
    assert len(calls) == 6


def test_connection_errors_are_retried_then_raised_as_transport_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with Client("k", "http://audit.test", transport=httpx.MockTransport(handler),
                retry=NoWait(max_retries=2)) as client, pytest.raises(TransportError) as caught:
        client.get_audit_logs()
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert len(client.retry.waits) == 2  # type: ignore[attr-defined]


def test_401_says_what_went_wrong(backend: Backend) -> None:
    with backend.client("wrong-key") as client, pytest.raises(AuthenticationError) as caught:
        client.get_audit_logs()
    assert caught.value.response is not None
    assert caught.value.response.headers["WWW-Authenticate"] == "Key"
    assert "401" in str(caught.value)


def test_a_read_only_key_may_not_publish(backend: Backend) -> None:
    with backend.client(backend.read_only_key) as client, pytest.raises(PermissionDeniedError):
        client.publish({"client_ip": "10.0.0.1", "url": "/x"})


def test_validation_error_names_the_bad_events_in_the_callers_numbering(backend: Backend) -> None:
    events = [{"client_ip": "10.0.0.1", "url": f"/ok/{i}"} for i in range(7)]
    del events[5]["url"]
    with backend.client(batch_size=2) as client, pytest.raises(ValidationError) as caught:
        client.publish(events)
    error = caught.value
    assert error.batch_start == 4
    assert error.bad_indices == [5]
    assert isinstance(error.detail, list)
    assert error.detail[0]["loc"][-1] == "url"


def test_a_flaky_service_is_retried_with_growing_jittered_waits(backend: Backend) -> None:
    flaky = Flaky(backend.make_transport(), "connect", 503, 502, 500)
    policy = NoWait()
    with backend.client(transport=flaky, retry=policy) as client:
        assert [log for log in client.get_audit_logs() if log["source"] == SOURCE] == []
    assert len(flaky.seen) == 5
    caps = [0.5, 1.0, 2.0, 4.0]
    assert len(policy.waits) == 4  # type: ignore[attr-defined]
    assert all(0 <= wait <= cap for wait, cap in zip(policy.waits, caps, strict=True))  # type: ignore[attr-defined]


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(backoff=1.0, max_backoff=3.0)
    assert max(policy.delay(10) for _ in range(200)) <= 3.0


def test_retry_after_as_an_http_date_is_understood() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no wait
    assert parse_retry_after("soon") is None
    assert parse_retry_after("2.5") == 2.5
