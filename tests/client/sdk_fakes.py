"""Test doubles for the SDK's tests: an in-memory stand-in for the service, and transports that fail on
cue. (A uniquely named module rather than conftest.py, so that tests can import it.)"""

from __future__ import annotations

import base64
import csv
import io
import ipaddress
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx

from auditkeep.client import AsyncClient, Client, RetryPolicy
from auditkeep.schemas.audit_logs import LOG_FIELDS

# Every event the tests publish carries this source; reads filter on it, so the same tests pass against
# the real app, which adds events of its own (self-audit of reads: action "audit_logs.read").
SOURCE = "sdk-test"
READ_WRITE_KEY = "rw-key"
READ_ONLY_KEY = "ro-key"
FILTERS = ("action", "user_email", "user_id", "object_type", "object_id", "source", "status",
           "request_type", "is_support_user", "client_ip", "q")


def _ts(value: str | None) -> str:
    when = datetime.now(UTC) if value is None else datetime.fromisoformat(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _beyond(key: tuple[Any, ...], pos: tuple[Any, ...], desc: bool) -> bool:
    return key < pos if desc else key > pos


def _error(status: int, detail: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"detail": detail}, headers=headers)


@dataclass
class FakeAuditServer:
    """The service's HTTP contract (CONTRACT.md), kept in memory: enough for the SDK, not a second server."""

    link_style: str = "path"  # "path" (/api/...?...), "query" (?...), or "absolute"
    events: list[dict[str, Any]] = field(default_factory=list)  # stored, with "seq"
    requests: list[httpx.Request] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        auth = request.headers.get("Authorization", "")
        key = auth.removeprefix("Key ").strip()
        if key not in (READ_WRITE_KEY, READ_ONLY_KEY):
            return _error(401, "Invalid API key", {"WWW-Authenticate": "Key"})
        if request.url.path != "/api/v1/audit_logs":
            return _error(404, "Not Found")
        if request.method == "POST":
            if key != READ_WRITE_KEY:
                return _error(403, "This key may not write audit logs")
            return self._ingest(request)
        return self._read(request)

    # -- POST ------------------------------------------------------------------------------------
    def _ingest(self, request: httpx.Request) -> httpx.Response:
        if len(request.content) > 16 * 1024 * 1024:
            return _error(413, "request body over 16 MB")
        body = json.loads(request.content)
        items = body if isinstance(body, list) else [body]
        if len(items) > 10_000:
            return _error(413, "more than 10,000 events")
        problems = []
        for index, item in enumerate(items):
            for name in ("client_ip", "url"):
                if not isinstance(item.get(name), str):
                    loc = ["body", index, name] if isinstance(body, list) else ["body", name]
                    problems.append({"loc": loc, "msg": "Field required", "type": "missing"})
        if problems:
            return _error(422, problems)
        by_uuid = {e["event_uuid"]: e for e in self.events}
        new, uuids = [], []
        for item in items:
            event = {name: item.get(name) for name in LOG_FIELDS}
            given = item.get("event_uuid")
            event["event_uuid"] = str(uuid.UUID(given)) if given else str(uuid.uuid4())
            event["timestamp"] = _ts(item.get("timestamp"))
            old = by_uuid.get(event["event_uuid"])
            if old is not None:
                if {k: v for k, v in old.items() if k not in ("seq", "timestamp")} != {
                    k: v for k, v in event.items() if k != "timestamp"
                }:
                    return _error(409, f"event_uuid {event['event_uuid']} is already used by another event")
            else:
                new.append(event)
                by_uuid[event["event_uuid"]] = event
            uuids.append(event["event_uuid"])
        for event in new:
            event["seq"] = len(self.events) + 1
            self.events.append(event)
        return httpx.Response(201, json={"event_uuids": uuids})

    # -- GET -------------------------------------------------------------------------------------
    def _read(self, request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        if request.content:
            body = json.loads(request.content) or {}
            params.update({k: v for k, v in body.items() if v is not None})
        matched = [e for e in self.events if self._matches(e, params)]
        headers: dict[str, str] = {}
        limit = int(params["limit"]) if "limit" in params else None
        if limit is not None and not 1 <= limit <= 10_000:
            return _error(422, [{"loc": ["query", "limit"], "msg": "out of range", "type": "value_error"}])
        if "after_seq" in params:
            after = int(params["after_seq"])
            page = [e for e in matched if e["seq"] > after]
            page = page[:limit] if limit is not None else page
            full = limit is not None and len(page) == limit
            last = page[-1]["seq"] if full else max([after, *(e["seq"] for e in self.events)])
            headers["X-Last-Seq"] = str(last)
        else:
            desc = params.get("order") == "desc"
            cursor = json.loads(base64.urlsafe_b64decode(params["cursor"])) if "cursor" in params else None
            # A walk only ever sees the events that existed when it began (seq <= its snapshot).
            snapshot = cursor["snapshot"] if cursor else len(self.events)
            ordered = sorted((e for e in matched if e["seq"] <= snapshot),
                             key=lambda e: (e["timestamp"], e["seq"]), reverse=desc)
            if cursor:
                pos = tuple(cursor["pos"])
                ordered = [e for e in ordered if _beyond((e["timestamp"], e["seq"]), pos, desc)]
            page = ordered[:limit] if limit is not None else ordered
            if limit is not None and len(ordered) > limit:
                token = json.dumps({"pos": [page[-1]["timestamp"], page[-1]["seq"]], "snapshot": snapshot})
                query = {k: v for k, v in request.url.params.items() if k != "cursor"}
                query["cursor"] = base64.urlsafe_b64encode(token.encode()).decode()
                target = {"path": "/api/v1/audit_logs?", "query": "?",
                          "absolute": "http://audit.test/api/v1/audit_logs?"}[self.link_style]
                headers["Link"] = f'<{target}{urlencode(query)}>; rel="next"'
        logs = [{name: e[name] for name in LOG_FIELDS} for e in page]
        fmt = params.get("format", "json")
        if fmt == "ndjson":
            text = "".join(json.dumps(log) + "\n" for log in logs)
            return httpx.Response(200, text=text, headers={**headers, "Content-Type": "application/x-ndjson"})
        if fmt == "csv":
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(LOG_FIELDS)
            for log in logs:
                writer.writerow(["" if log[n] is None else
                                 json.dumps(log[n]) if n == "payload" else
                                 str(log[n]).lower() if isinstance(log[n], bool) else log[n]
                                 for n in LOG_FIELDS])
            return httpx.Response(200, text=out.getvalue(), headers={**headers, "Content-Type": "text/csv"})
        return httpx.Response(200, json={"logs": logs}, headers=headers)

    def _matches(self, event: dict[str, Any], params: dict[str, str]) -> bool:
        if params.get("start_date") and event["timestamp"] < _ts(params["start_date"]):
            return False
        if params.get("end_date") and event["timestamp"] >= _ts(params["end_date"]):
            return False
        for name in FILTERS:
            if name not in params:
                continue
            want, have = params[name], event[name]
            if name == "action" and want.endswith("*"):
                ok = have is not None and have.startswith(want[:-1])
            elif name == "q":
                ok = any(want.lower() in (event[f] or "").lower() for f in ("log_entry", "url"))
            elif name == "client_ip":
                ok = ipaddress.ip_address(have) in ipaddress.ip_network(want, strict=False)
            elif isinstance(have, bool):
                ok = str(have).lower() == want
            else:
                ok = have is not None and str(have) == want
            if not ok:
                return False
        return True


@dataclass
class Backend:
    """Where the SDK's tests send their requests, and with which keys."""

    base_url: str
    key: str  # may read and write
    read_only_key: str
    make_transport: Callable[[], httpx.MockTransport | httpx.BaseTransport]
    make_async_transport: Callable[[], httpx.AsyncBaseTransport]

    def client(self, key: str | None = None, *, transport: httpx.BaseTransport | None = None,
               **kwargs: Any) -> Client:
        kwargs.setdefault("retry", NoWait())
        return Client(key or self.key, self.base_url, transport=transport or self.make_transport(), **kwargs)

    def async_client(self, key: str | None = None, *, transport: httpx.AsyncBaseTransport | None = None,
                     **kwargs: Any) -> AsyncClient:
        kwargs.setdefault("retry", NoWait())
        return AsyncClient(key or self.key, self.base_url,
                           transport=transport or self.make_async_transport(), **kwargs)


class NoWait(RetryPolicy):
    """The default retry policy without the waiting; records the waits it skipped."""

    def __init__(self, max_retries: int = 5) -> None:
        super().__init__(max_retries=max_retries)
        object.__setattr__(self, "waits", [])

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)  # type: ignore[attr-defined]

    async def asleep(self, seconds: float) -> None:
        self.waits.append(seconds)  # type: ignore[attr-defined]


class Flaky(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Wraps a transport and, for each request in turn, plays the next scripted failure.

    Script items: "connect" (the connection is refused), "lost" (the request reaches the service but
    the answer is lost: a read timeout), an int status such as 503, a (status, headers) pair, "cut:N"
    (the answer breaks off after N body bytes), or "ok". After the script, every request goes through.
    """

    def __init__(self, inner: Any, *script: Any) -> None:
        self.inner = inner
        self.script = list(script)
        self.seen: list[httpx.Request] = []

    def _next(self, request: httpx.Request) -> Any:
        self.seen.append(request)
        return self.script.pop(0) if self.script else "ok"

    @staticmethod
    def _canned(step: Any, request: httpx.Request) -> httpx.Response | None:
        if step == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        if isinstance(step, int):
            return httpx.Response(step, json={"detail": "try later"})
        if isinstance(step, tuple):
            return httpx.Response(step[0], headers=step[1], json={"detail": "slow down"})
        return None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        step = self._next(request)
        canned = self._canned(step, request)
        if canned is not None:
            return canned
        response = self.inner.handle_request(request)
        if step == "lost":
            response.read()
            raise httpx.ReadTimeout("timed out", request=request)
        if isinstance(step, str) and step.startswith("cut:"):
            body = response.read()
            return httpx.Response(response.status_code, headers=_decoded(response.headers),
                                  stream=_Cut(body, int(step[4:])))
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        step = self._next(request)
        canned = self._canned(step, request)
        if canned is not None:
            return canned
        response = await self.inner.handle_async_request(request)
        if step == "lost":
            await response.aread()
            raise httpx.ReadTimeout("timed out", request=request)
        if isinstance(step, str) and step.startswith("cut:"):
            body = await response.aread()
            return httpx.Response(response.status_code, headers=_decoded(response.headers),
                                  stream=_Cut(body, int(step[4:])))
        return response


def _decoded(headers: httpx.Headers) -> dict[str, str]:
    """The headers of a response whose body was read (so decompressed): without its encoding."""
    return {k: v for k, v in headers.items() if k.lower() not in ("content-encoding", "content-length")}


class _Cut(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that breaks off after `n` bytes."""

    def __init__(self, body: bytes, n: int) -> None:
        self.body, self.n = body, n

    def __iter__(self) -> Iterator[bytes]:
        yield self.body[: self.n]
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    async def __aiter__(self) -> Any:
        yield self.body[: self.n]
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def make_event(n: int, **fields: Any) -> dict[str, Any]:
    """A valid event, distinct per n, one second apart."""
    return {"action": f"thing.{n % 3}", "client_ip": f"10.0.{n // 250}.{n % 250 + 1}",
            "url": f"/things/{n}", "timestamp": f"2024-05-01T00:{n // 60 % 60:02d}:{n % 60:02d}Z",
            "user_email": f"user{n % 4}@example.com", "user_id": n % 4, "source": SOURCE, **fields}
