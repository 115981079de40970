"""Capture middleware overhead (issue #4, target <= 0.2 ms per request): in-process, no network.

How it is measured: a trivial application is called directly through its ASGI (or WSGI) interface,
with a fresh scope (environ) per request and a `send` (`start_response`) that discards the answer,
so the timings hold the application and the middleware and nothing else (no HTTP parsing, no
sockets, whose noise would hide a few microseconds). The same application is timed without and with
`ASGIAuditMiddleware` (`WSGIAuditMiddleware`) in alternating rounds of `--batch` sequential requests, so
drift (CPU frequency, other load) hits both alike. Two numbers per application, each the difference of
medians over `--rounds` rounds of per-request means:

- request path: what a request waits for. The shipper's thread sleeps during the round (its batch is
  larger than the round), so only the middleware's own work is timed: reading the status, asking
  `get_user`, appending to the buffer.
- total CPU: the same plus, after the round, the time the shipper's thread takes to build, encode and
  publish that round's events (to an `httpx.MockTransport` answering 201 at once), divided by the
  requests. This is what capture costs a CPU-bound server per request; in normal operation the thread
  does this work in between requests, in batches of 500, holding the GIL for it.

Three applications: a bare ASGI callable, a Starlette app with one routed endpoint (the middleware then
reads the matched route), and a bare WSGI callable.

    .venv/bin/python bench/capture_overhead.py
    .venv/bin/python bench/capture_overhead.py --rounds 201 --batch 2000

Results: a table on stdout and JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from auditkeep.capture import ASGIAuditMiddleware, Shipper, WSGIAuditMiddleware
from auditkeep.client import Client

SCOPE: dict[str, Any] = {
    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
    "path": "/items/42", "raw_path": b"/items/42", "root_path": "", "query_string": b"full=1",
    "headers": [(b"host", b"shop.test"), (b"user-agent", b"bench/1.0"), (b"referer", b"http://shop.test/"),
                (b"accept", b"*/*")],
    "client": ("203.0.113.5", 5555), "server": ("127.0.0.1", 8000),
}
ENVIRON: dict[str, Any] = {
    "REQUEST_METHOD": "GET", "PATH_INFO": "/items/42", "SCRIPT_NAME": "", "QUERY_STRING": "full=1",
    "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "HTTP_HOST": "shop.test", "HTTP_USER_AGENT": "bench/1.0",
    "HTTP_REFERER": "http://shop.test/", "REMOTE_ADDR": "203.0.113.5", "wsgi.url_scheme": "http",
}


async def bare_asgi(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def item(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


def starlette_app() -> Starlette:
    return Starlette(routes=[Route("/items/{item_id}", item, name="read_item")])


def bare_wsgi(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def make_shipper(batch: int) -> Shipper:
    def handler(request: httpx.Request) -> httpx.Response:
        count = request.content.count(b'"event_uuid"')
        return httpx.Response(201, json={"event_uuids": ["x"] * count})

    client = Client("bench", "http://audit.bench", transport=httpx.MockTransport(handler))
    # The thread sleeps through a round (batch larger than the round, a long interval) until flushed.
    return Shipper(client, spool_dir=None, batch_size=batch + 1, max_buffer=batch + 1, flush_interval=3600)


def asgi_timer(app: Callable[..., Awaitable[None]], batch: int) -> Callable[[], float]:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def run() -> float:
        start = time.perf_counter()
        for _ in range(batch):
            await app(dict(SCOPE), receive, send)
        return (time.perf_counter() - start) / batch

    loop = asyncio.new_event_loop()
    return lambda: loop.run_until_complete(run())


def wsgi_timer(app: Callable[..., Any], batch: int) -> Callable[[], float]:
    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
        return lambda data: None

    def run() -> float:
        start = time.perf_counter()
        for _ in range(batch):
            body = app(dict(ENVIRON), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return (time.perf_counter() - start) / batch

    return run


def measure(name: str, plain: Callable[[], float], wrapped: Callable[[], float], shipper: Shipper,
            rounds: int, batch: int) -> dict[str, Any]:
    def flushed() -> float:
        start = time.perf_counter()
        assert shipper.flush(60), "the shipper did not drain"
        return (time.perf_counter() - start) / batch

    for _ in range(3):  # warm up both (imports, caches, the shipper's thread)
        plain()
        wrapped()
        flushed()
    without, path, total = [], [], []
    for _ in range(rounds):
        without.append(plain())
        request_path = wrapped()
        path.append(request_path)
        total.append(request_path + flushed())
    base = statistics.median(without)
    return {"app": name, "without_us": base * 1e6,
            "request_path_overhead_us": (statistics.median(path) - base) * 1e6,
            "total_cpu_overhead_us": (statistics.median(total) - base) * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=101, help="alternating rounds (median over them)")
    parser.add_argument("--batch", type=int, default=1000, help="sequential requests per round")
    args = parser.parse_args()

    results = []
    shippers = []
    for name, plain_app, kind in (("bare ASGI", bare_asgi, "asgi"), ("Starlette route", starlette_app(), "asgi"),
                                  ("bare WSGI", bare_wsgi, "wsgi")):
        shipper = make_shipper(args.batch)
        shippers.append(shipper)
        if kind == "asgi":
            wrapped_app: Any = ASGIAuditMiddleware(plain_app, shipper=shipper)
            plain, wrapped = asgi_timer(plain_app, args.batch), asgi_timer(wrapped_app, args.batch)
        else:
            wrapped_app = WSGIAuditMiddleware(plain_app, shipper=shipper)
            plain, wrapped = wsgi_timer(plain_app, args.batch), wsgi_timer(wrapped_app, args.batch)
        results.append(measure(name, plain, wrapped, shipper, args.rounds, args.batch))
    published = sum(s.stats.published for s in shippers)
    lost = sum(s.stats.dropped for s in shippers)
    for shipper in shippers:
        shipper.close()

    print(f"capture overhead per request, {args.rounds} rounds x {args.batch} requests, medians")
    print(f"{'app':<18}{'app alone µs':>14}{'request path µs':>17}{'total CPU µs':>14}")
    for r in results:
        print(f"{r['app']:<18}{r['without_us']:>14.2f}{r['request_path_overhead_us']:>17.2f}"
              f"{r['total_cpu_overhead_us']:>14.2f}")
    print(f"({published} events published by the shippers, {lost} lost)")

    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    record = {"benchmark": "capture_overhead", "rounds": args.rounds, "batch": args.batch, "results": results,
              "python": sys.version.split()[0], "platform": platform.platform(), "time": time.time()}
    (out / f"capture_overhead-{int(time.time())}.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
