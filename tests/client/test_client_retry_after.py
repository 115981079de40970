"""The SDK waits as long as a 429 or 503 says in Retry-After, in seconds or as an HTTP-date (issue #11)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from auditkeep.client import AsyncClient, Client, RateLimitError, ServerError
from auditkeep.client._retry import parse_retry_after
from tests.client.sdk_fakes import NoWait


def once_then_ok(status: int, retry_after: str) -> httpx.MockTransport:
    """A service that answers `status` with `retry_after` once, then an empty page."""
    answers = iter([httpx.Response(status, json={"detail": "later"}, headers={"Retry-After": retry_after})])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers, httpx.Response(200, json={"logs": []}))

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("status", [429, 503])
def test_sync_client_waits_the_seconds_given(status: int) -> None:
    with Client("k", "http://audit.test", transport=once_then_ok(status, "12"), retry=NoWait()) as client:
        assert client.get_audit_logs() == []
    assert client.retry.waits == [12.0]  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", [429, 503])
def test_async_client_waits_the_seconds_given(status: int) -> None:
    async def run() -> list[float]:
        async with AsyncClient("k", "http://audit.test", transport=once_then_ok(status, "3"),
                               retry=NoWait()) as client:
            assert await client.get_audit_logs() == []
        return client.retry.waits  # type: ignore[attr-defined,no-any-return]

    assert asyncio.run(run()) == [3.0]


def test_an_http_date_is_waited_for() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=40), usegmt=True)
    with Client("k", "http://audit.test", transport=once_then_ok(503, when), retry=NoWait()) as client:
        assert client.get_audit_logs() == []
    [wait] = client.retry.waits  # type: ignore[attr-defined]
    assert 38.0 <= wait <= 40.0  # the date has whole seconds


def test_a_wait_beyond_max_retry_after_is_capped() -> None:
    with Client("k", "http://audit.test", transport=once_then_ok(429, "86400"), retry=NoWait()) as client:
        assert client.get_audit_logs() == []
    assert client.retry.waits == [300.0]  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "soon", "0x10", ""])
def test_unreadable_or_non_finite_values_mean_no_hint(value: str) -> None:
    assert parse_retry_after(value) is None


def test_the_hint_is_kept_on_the_error_once_retries_are_spent() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"detail": "slow down"}, headers={"Retry-After": "2"})

    client = Client("k", "http://audit.test", transport=httpx.MockTransport(handler), retry=NoWait(max_retries=1))
    with client, pytest.raises(RateLimitError) as caught:
        client.get_audit_logs()
    assert caught.value.retry_after == 2.0
    assert client.retry.waits == [2.0]  # type: ignore[attr-defined]


def test_a_503_without_a_hint_backs_off_with_jitter() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"detail": "down"})

    client = Client("k", "http://audit.test", transport=httpx.MockTransport(handler), retry=NoWait(max_retries=3))
    with client, pytest.raises(ServerError):
        client.get_audit_logs()
    waits = client.retry.waits  # type: ignore[attr-defined]
    assert len(waits) == 3
    assert all(0.0 <= w <= cap for w, cap in zip(waits, [0.5, 1.0, 2.0], strict=True))
