"""The synchronous client (`Client`) and its poller."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import IO, Any, Unpack

import httpx

from auditkeep import __version__
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

__all__ = ["Client", "LogPoll"]

Log = dict[str, Any]
USER_AGENT = f"auditkeep-python/{__version__}"
JSON_ACCEPT = {"Accept": "application/json"}


def check_page_size(page_size: int, name: str = "page_size") -> int:
    """A page or batch size as the service accepts it (1 to 10,000)."""
    if not 1 <= page_size <= MAX_EVENTS_PER_REQUEST:
        raise ValueError(f"{name} must be between 1 and {MAX_EVENTS_PER_REQUEST}, not {page_size}")
    return page_size


def seed_body(start_date: DateLike, end_date: DateLike) -> bytes:
    """The JSON body of the seed's GET (Datafold's `ApiDownloadAuditLogs`)."""
    return json.dumps({"start_date": date_param(start_date), "end_date": date_param(end_date)}).encode()


def logs_of(response: httpx.Response) -> list[Log]:
    """The `logs` array of a JSON page."""
    try:
        logs = response.json()["logs"]
    except (ValueError, KeyError, TypeError):
        raise AuditKeepClientError(f"{response.request.url}: the answer is not {{\"logs\": [...]}}") from None
    if not isinstance(logs, list):
        raise AuditKeepClientError(f"{response.request.url}: `logs` is not a list")
    return logs


class Published(list[str]):
    """What `publish` returns: the events' uuids in order (a list, as before), plus how many of them the
    service stored (`accepted`) and how many it had already (`already_present`: the same event_uuid and
    content, so stored once). Both are None when a service did not say (older auditkeep, Datafold).

    Example:
        >>> done = client.publish(events)
        >>> print(f"{done.accepted} new, {done.already_present} already present")
    """

    def __init__(self) -> None:
        super().__init__()
        self.accepted: int | None = 0
        self.already_present: int | None = 0

    def add_counts(self, response: httpx.Response) -> None:
        """Add one 201 answer's counts; an answer without them makes both None for good."""
        try:
            body = response.json()
            accepted, present = body["accepted"], body["already_present"]
        except (ValueError, KeyError, TypeError):
            accepted = present = None
        if type(accepted) is not int or type(present) is not int or self.accepted is None \
                or self.already_present is None:
            self.accepted = self.already_present = None
            return
        self.accepted += accepted
        self.already_present += present


def uuids_of(response: httpx.Response, sent: list[str]) -> list[str]:
    """The uuids the service returned for a batch (normalized by it), or the ones sent."""
    try:
        uuids = response.json()["event_uuids"]
    except (ValueError, KeyError, TypeError):
        return sent
    return [str(u) for u in uuids] if isinstance(uuids, list) and len(uuids) == len(sent) else sent


def poll_more(response: httpx.Response, count: int, page_size: int, before: int, after: int) -> bool:
    """Whether an `after_seq` poll should ask again at once: the service said there is a next page, or
    sent a full page; and the position moved (so a service that sends neither cannot loop us)."""
    return after > before and (next_url(response) is not None or count >= page_size)


class Client:
    """A synchronous client for an auditkeep (or Datafold) audit log service.

    The API key and the URL come from the arguments, else from `AUDITKEEP_API_KEY` / `AUDITKEEP_URL`,
    else from `DATAFOLD_API_KEY` / `DATAFOLD_HOST`. Requests that fail on a connection error, a 429 or
    a 5xx are tried again according to `retry`.

    Example:
        >>> from auditkeep.client import Client
        >>> with Client() as client:  # key and URL from the environment
        ...     logs = client.get_audit_logs("2024-01-01T00:00:00", "2024-02-01T00:00:00")
        ...     client.publish({"action": "report.export", "client_ip": "10.0.0.7", "url": "/reports/7"})

    `transport` replaces the network (an `httpx.MockTransport` in tests).
    """

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *,
                 timeout: float | httpx.Timeout = 30.0, retry: RetryPolicy | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        key, url = resolve_credentials(api_key, base_url)
        self.base_url = url
        self.retry = retry or RetryPolicy()
        self.batch_size = check_page_size(batch_size, "batch_size")
        self._http = httpx.Client(
            base_url=url, timeout=timeout, transport=transport,
            headers={"Authorization": f"Key {key}", "User-Agent": USER_AGENT, **(headers or {})},
        )

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r})"  # never the key

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    # -- transport -------------------------------------------------------------------------------
    def _send(self, method: str, url: httpx.URL | str, *, params: Mapping[str, str] | None = None,
              content: bytes | None = None, headers: Mapping[str, str] | None = None,
              stream: bool = False) -> httpx.Response:
        """Send a request, retrying transient failures; a successful response, or a typed error."""
        retry = 0
        while True:
            request = self._http.build_request(method, url, params=params, content=content, headers=headers)
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if retry >= self.retry.max_retries or not self.retry.should_retry_exception(exc):
                    raise TransportError(f"{method} {request.url}: {exc!r}") from exc
                delay = self.retry.delay(retry)
            else:
                if response.status_code < 400:
                    return response
                response.read()
                response.close()
                status = response.status_code
                if retry >= self.retry.max_retries or not self.retry.should_retry_status(status):
                    raise error_for_response(response)
                delay = self.retry.delay(retry, parse_retry_after(response.headers.get("Retry-After")))
            retry += 1
            self.retry.sleep(delay)

    # -- reading ---------------------------------------------------------------------------------
    def get_audit_logs(self, start_date: DateLike = None, end_date: DateLike = None) -> list[Log]:
        """All logs in `[start_date, end_date)` (either may be None), the way Datafold's API is called:
        a GET whose JSON body holds the two dates. Returns the list of logs (17 fields each).

        Example:
            >>> client.get_audit_logs(start_date="2024-05-01T00:00:00Z")
            [{'action': 'user.login', 'client_ip': '10.0.0.1', ...}]

        For large ranges prefer `iter_audit_logs`, which pages instead of holding everything.
        """
        body = seed_body(start_date, end_date)
        response = self._send("GET", AUDIT_LOGS_PATH, content=body,
                              headers={"Content-Type": "application/json", "Accept": "application/json"})
        return logs_of(response)

    def iter_audit_logs(self, start_date: DateLike = None, end_date: DateLike = None, *,
                        order: Order | None = None, page_size: int = 1000,
                        **filters: Unpack[Filters]) -> Iterator[Log]:
        """Every log matching the dates and filters, fetched `page_size` at a time by following the
        service's `Link: rel="next"` cursors: each event that matched when the walk began is seen
        exactly once, even while events are being ingested.

        Example:
            >>> for log in client.iter_audit_logs("2024-05-01", action="api_key.*", order="desc"):
            ...     print(log["timestamp"], log["user_email"], log["action"])
        """
        params = query_params(filters, start_date=date_param(start_date), end_date=date_param(end_date),
                              order=order, limit=check_page_size(page_size))
        url: httpx.URL | str = AUDIT_LOGS_PATH
        page_params: dict[str, str] | None = params
        while True:
            response = self._send("GET", url, params=page_params, headers=JSON_ACCEPT)
            yield from logs_of(response)
            target = next_url(response)
            if target is None:
                return
            url, page_params = target, None

    def poll(self, after_seq: int = 0, *, page_size: int = 1000, follow: bool = False,
             interval: float = 5.0, **filters: Unpack[Filters]) -> LogPoll:
        """Events stored after `after_seq`, in ingest (seq) order, for incremental pulling into a SIEM.

        Iterate the returned `LogPoll`; its `last_seq` is the position to save and pass as `after_seq`
        next time. It covers an event once the iterator has handed it out and stands at the end of a
        page when the page's last event is handed out, so saving it after handling each event repeats
        nothing and misses nothing (events that arrive late with old timestamps included). With
        `follow=True` the iterator never ends: once caught up it asks again every `interval` seconds.

        Example:
            >>> poller = client.poll(after_seq=state.load(), source="api")
            >>> for log in poller:
            ...     siem.send(log)
            ...     state.save(poller.last_seq)
        """
        params = query_params(filters, limit=check_page_size(page_size))
        return LogPoll(self, after_seq, params, page_size=page_size, follow=follow, interval=interval)

    def export(self, fmt: ExportFormat, output: str | os.PathLike[str] | IO[bytes], *,
               start_date: DateLike = None, end_date: DateLike = None, order: Order | None = None,
               page_size: int = MAX_EVENTS_PER_REQUEST, resume: bool = True,
               progress: Callable[[int], None] | None = None, integrity: bool = False,
               **filters: Unpack[Filters]) -> ExportResult:
        """Stream the matching logs into `output` as `json` (`{"logs": [...]}`), `ndjson` or `csv`, in
        constant memory; `progress(events_so_far)` is called after each page.

        When `output` is a path the export is resumable: if a previous run with the same options was
        interrupted (a `<output>.resume.json` state file is left beside it), it continues where that
        run stopped, and the finished file holds each event exactly once. After each page the output
        is fsync'd and the state file records the next page's cursor and the output's size; resuming
        cuts a half-written page off and follows the saved cursor. `resume=False` starts over. A
        connection that breaks mid-page is retried in-process from the start of that page. A file
        object is written as it is, without resuming. `integrity=True` adds seq, prev_hash and hash
        (`include=integrity`) and the service's statement of the query, so that `auditkeep
        verify-export` can check the file, and whether it is complete, offline.

        Example:
            >>> result = client.export("ndjson", "may.ndjson", start_date="2024-05-01", end_date="2024-06-01")
            >>> result.events, result.resumed
            (120000, False)
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
                target = self._export_page(writer, url, page_params, headers)
                writer.commit_page(None if target is None else str(target))
                if progress is not None:
                    progress(writer.events)
                if target is None:
                    return writer.finish()
                url, page_params = target, None
        finally:
            writer.close()

    def _export_page(self, writer: ExportWriter, url: httpx.URL | str, params: dict[str, str] | None,
                     headers: dict[str, str]) -> httpx.URL | None:
        retry = 0
        while True:
            response = self._send("GET", url, params=params, headers=headers, stream=True)
            try:
                target = next_url(response)
                for chunk in response.iter_bytes():
                    writer.feed(chunk)
                return target
            except httpx.TransportError as exc:
                writer.rollback()
                if retry >= self.retry.max_retries or not self.retry.should_retry_exception(exc):
                    raise TransportError(f"export broke off at {response.request.url}: {exc!r}") from exc
            finally:
                response.close()
            self.retry.sleep(self.retry.delay(retry))
            retry += 1

    # -- writing ---------------------------------------------------------------------------------
    def publish(self, events: Mapping[str, Any] | Iterable[Mapping[str, Any]], *,
                batch_size: int | None = None) -> Published:
        """Store one event or many; returns their event_uuids in order, with the service's counts of new
        and already present events (`Published`).

        Each event lacking an `event_uuid` gets a UUIDv7 before the first attempt (written into the
        caller's dict), so retries (after a connection error, 429 or 5xx) and a second call with the
        same list after an error never store an event twice. Events go in batches of `batch_size`
        (default the client's, 1,000; at most 10,000) and at most 16 MB. Other 4xx answers raise at
        once: a `ValidationError` says which events were refused in `bad_indices`. Batches before a
        failing one are stored.

        Example:
            >>> client.publish([
            ...     {"action": "datasource.delete", "client_ip": "10.1.2.3", "url": "/api/v1/ds/9",
            ...      "user_email": "ann@example.com", "object_type": "datasource", "object_id": 9},
            ... ])
            ['5b0e8a3e-...']
        """
        prepared = prepare_events(events)
        encoded = encode_events(prepared)
        uuids = Published()
        for start, end, body in iter_batches(encoded, check_page_size(batch_size or self.batch_size, "batch_size")):
            try:
                response = self._send("POST", AUDIT_LOGS_PATH, content=body,
                                      headers={"Content-Type": "application/json"})
            except ValidationError as exc:
                exc.batch_start = start
                raise
            uuids.extend(uuids_of(response, [str(e["event_uuid"]) for e in prepared[start:end]]))
            uuids.add_counts(response)
        return uuids


class LogPoll:
    """Iterator over the events after a seq (see `Client.poll`); `last_seq` is where to resume."""

    def __init__(self, client: Client, after_seq: int, params: dict[str, str], *, page_size: int,
                 follow: bool, interval: float) -> None:
        self.last_seq = after_seq
        self._client = client
        self._params = params
        self._page_size = page_size
        self._follow = follow
        self._interval = interval

    def __iter__(self) -> Iterator[Log]:
        while True:
            more = True
            while more:
                before = self.last_seq
                response = self._client._send("GET", AUDIT_LOGS_PATH,
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
            self._client.retry.sleep(self._interval)
