"""The asynchronous client (`AsyncClient`), the same API as `Client` with `await`.

Waits use `asyncio.sleep` (through `RetryPolicy.asleep`); an export's file writes and fsyncs are
blocking, once per page.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from types import TracebackType
from typing import IO, Any, Unpack

import httpx

from auditkeep.client._client import (
    JSON_ACCEPT,
    USER_AGENT,
    Log,
    Published,
    check_page_size,
    logs_of,
    poll_more,
    seed_body,
    uuids_of,
)
from auditkeep.client._config import resolve_credentials
from auditkeep.client._errors import (
    AuditKeepClientError,
    TransportError,
    ValidationError,
    error_for_response,
)
from auditkeep.client._export import MEDIA_TYPES, ExportFormat, ExportResult, ExportWriter
from auditkeep.client._retry import RetryPolicy, parse_retry_after
from auditkeep.client._wire import (
    AUDIT_LOGS_PATH,
    DEFAULT_BATCH_SIZE,
    DateLike,
    Filters,
    Order,
    date_param,
    encode_events,
    iter_batches,
    last_seq,
    next_url,
    prepare_events,
    query_params,
)
from auditkeep.schemas.events import MAX_EVENTS_PER_REQUEST

__all__ = ["AsyncClient", "AsyncLogPoll"]


class AsyncClient:
    """An asynchronous client; the same methods as `Client`, awaited.

    Example:
        >>> from auditkeep.client import AsyncClient
        >>> async with AsyncClient("key", "https://audit.example.com") as client:
        ...     async for log in client.iter_audit_logs(action="user.login"):
        ...         print(log["user_email"])
        ...     await client.publish({"action": "job.run", "client_ip": "10.0.0.1", "url": "/jobs/1"})
    """

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *,
                 timeout: float | httpx.Timeout = 30.0, retry: RetryPolicy | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, headers: Mapping[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        key, url = resolve_credentials(api_key, base_url)
        self.base_url = url
        self.retry = retry or RetryPolicy()
        self.batch_size = check_page_size(batch_size, "batch_size")
        self._http = httpx.AsyncClient(
            base_url=url, timeout=timeout, transport=transport,
            headers={"Authorization": f"Key {key}", "User-Agent": USER_AGENT, **(headers or {})},
        )

    def __repr__(self) -> str:
        return f"AsyncClient(base_url={self.base_url!r})"  # never the key

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _send(self, method: str, url: httpx.URL | str, *, params: Mapping[str, str] | None = None,
                    content: bytes | None = None, headers: Mapping[str, str] | None = None,
                    stream: bool = False) -> httpx.Response:
        """Send a request, retrying transient failures; a successful response, or a typed error."""
        retry = 0
        while True:
            request = self._http.build_request(method, url, params=params, content=content, headers=headers)
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if retry >= self.retry.max_retries or not self.retry.should_retry_exception(exc):
                    raise TransportError(f"{method} {request.url}: {exc!r}") from exc
                delay = self.retry.delay(retry)
            else:
                if response.status_code < 400:
                    return response
                await response.aread()
                await response.aclose()
                status = response.status_code
                if retry >= self.retry.max_retries or not self.retry.should_retry_status(status):
                    raise error_for_response(response)
                delay = self.retry.delay(retry, parse_retry_after(response.headers.get("Retry-After")))
            retry += 1
            await self.retry.asleep(delay)

    async def get_audit_logs(self, start_date: DateLike = None, end_date: DateLike = None) -> list[Log]:
        """All logs in `[start_date, end_date)`, sent like Datafold's API (a GET with a JSON body).

        Example:
            >>> logs = await client.get_audit_logs("2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z")
        """
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        response = await self._send("GET", AUDIT_LOGS_PATH, content=seed_body(start_date, end_date),
                                    headers=headers)
        return logs_of(response)

    async def iter_audit_logs(self, start_date: DateLike = None, end_date: DateLike = None, *,
                              order: Order | None = None, page_size: int = 1000,
                              **filters: Unpack[Filters]) -> AsyncIterator[Log]:
        """Every matching log, page by page through `Link: rel="next"` (see `Client.iter_audit_logs`).

        Example:
            >>> async for log in client.iter_audit_logs(user_email="ann@example.com", order="desc"):
            ...     print(log["action"])
        """
        params = query_params(filters, start_date=date_param(start_date), end_date=date_param(end_date),
                              order=order, limit=check_page_size(page_size))
        url: httpx.URL | str = AUDIT_LOGS_PATH
        page_params: dict[str, str] | None = params
        while True:
            response = await self._send("GET", url, params=page_params, headers=JSON_ACCEPT)
            for log in logs_of(response):
                yield log
            target = next_url(response)
            if target is None:
                return
            url, page_params = target, None

    def poll(self, after_seq: int = 0, *, page_size: int = 1000, follow: bool = False,
             interval: float = 5.0, **filters: Unpack[Filters]) -> AsyncLogPoll:
        """Events stored after `after_seq`, in seq order (see `Client.poll`).

        Example:
            >>> poller = client.poll(after_seq=42)
            >>> async for log in poller:
            ...     await handle(log)
            >>> save(poller.last_seq)
        """
        params = query_params(filters, limit=check_page_size(page_size))
        return AsyncLogPoll(self, after_seq, params, page_size=page_size, follow=follow, interval=interval)

    async def export(self, fmt: ExportFormat, output: str | os.PathLike[str] | IO[bytes], *,
                     start_date: DateLike = None, end_date: DateLike = None, order: Order | None = None,
                     page_size: int = MAX_EVENTS_PER_REQUEST, resume: bool = True,
                     progress: Callable[[int], None] | None = None, integrity: bool = False,
                     **filters: Unpack[Filters]) -> ExportResult:
        """Stream the matching logs into a file, resumably (see `Client.export`).

        Example:
            >>> result = await client.export("csv", "may.csv", start_date="2024-05-01")
        """
        params = query_params(filters, start_date=date_param(start_date), end_date=date_param(end_date),
                              order=order, limit=check_page_size(page_size),
                              include="integrity" if integrity else None)
        writer = ExportWriter(fmt, output, {"url": self.base_url + AUDIT_LOGS_PATH, "params": params},
                              resume=resume)
        params["format"] = writer.wire_format
        headers = {"Accept": MEDIA_TYPES[writer.wire_format]}
        try:
            url: httpx.URL | str = writer.next_url or AUDIT_LOGS_PATH
            page_params: dict[str, str] | None = None if writer.next_url else params
            while True:
                target = await self._export_page(writer, url, page_params, headers)
                writer.commit_page(None if target is None else str(target))
                if progress is not None:
                    progress(writer.events)
                if target is None:
                    return writer.finish()
                url, page_params = target, None
        finally:
            writer.close()

    async def _export_page(self, writer: ExportWriter, url: httpx.URL | str,
                           params: dict[str, str] | None, headers: dict[str, str]) -> httpx.URL | None:
        retry = 0
        while True:
            response = await self._send("GET", url, params=params, headers=headers, stream=True)
            try:
                target = next_url(response)
                async for chunk in response.aiter_bytes():
                    writer.feed(chunk)
                return target
            except httpx.TransportError as exc:
                writer.rollback()
                if retry >= self.retry.max_retries or not self.retry.should_retry_exception(exc):
                    raise TransportError(f"export broke off at {response.request.url}: {exc!r}") from exc
            finally:
                await response.aclose()
            await self.retry.asleep(self.retry.delay(retry))
            retry += 1

    async def publish(self, events: Mapping[str, Any] | Iterable[Mapping[str, Any]], *,
                      batch_size: int | None = None) -> Published:
        """Store one event or many, idempotently, in batches with retries (see `Client.publish`).

        Example:
            >>> await client.publish({"action": "user.login", "client_ip": "10.0.0.1", "url": "/login"})
            ['0b7c...']
        """
        prepared = prepare_events(events)
        encoded = encode_events(prepared)
        uuids = Published()
        for start, end, body in iter_batches(encoded, check_page_size(batch_size or self.batch_size, "batch_size")):
            try:
                response = await self._send("POST", AUDIT_LOGS_PATH, content=body,
                                            headers={"Content-Type": "application/json"})
            except ValidationError as exc:
                exc.batch_start = start
                raise
            uuids.extend(uuids_of(response, [str(e["event_uuid"]) for e in prepared[start:end]]))
            uuids.add_counts(response)
        return uuids


class AsyncLogPoll:
    """Async iterator over the events after a seq (see `Client.poll`); `last_seq` is where to resume."""

    def __init__(self, client: AsyncClient, after_seq: int, params: dict[str, str], *, page_size: int,
                 follow: bool, interval: float) -> None:
        self.last_seq = after_seq
        self._client = client
        self._params = params
        self._page_size = page_size
        self._follow = follow
        self._interval = interval

    async def __aiter__(self) -> AsyncIterator[Log]:
        while True:
            more = True
            while more:
                before = self.last_seq
                response = await self._client._send("GET", AUDIT_LOGS_PATH,
                                                    params={**self._params, "after_seq": str(before)},
                                                    headers=JSON_ACCEPT)
                logs = logs_of(response)
                seq = last_seq(response)
                if seq is None:
                    raise AuditKeepClientError("the service sent no X-Last-Seq; does it support after_seq?")
                more = poll_more(response, len(logs), self._page_size, before, seq)
                if not logs:
                    self.last_seq = max(before, seq)
                for index, log in enumerate(logs):
                    if index == len(logs) - 1:
                        self.last_seq = max(before, seq)
                    yield log
            if not self._follow:
                return
            await self._client.retry.asleep(self._interval)
