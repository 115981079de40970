"""Prometheus metrics: request counts and latency by route, events ingested, and whether each
organization's log verifies (self-watch), served at /metrics.

A pure ASGI middleware (not BaseHTTPMiddleware) so streamed responses are not buffered. Each worker
process keeps its own registry; with several workers, set PROMETHEUS_MULTIPROC_DIR to aggregate them
(prometheus_client's multiprocess mode). `auditkeep_integrity_ok` is read from the database at each
scrape (the watch rows, selfwatch/watcher.py), so every worker and node reports the same value.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auditkeep.storage import Storage, selfwatch

REQUESTS = Counter("auditkeep_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "auditkeep_http_request_duration_seconds", "Time to the response's first byte", ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_ACCEPTED = Counter(
    "auditkeep_ingest_events_total", "Events accepted by ingest (idempotent retries included)"
)


def _route(scope: Scope) -> str:
    # The matched route's template keeps label cardinality bounded (never the raw path).
    route: Any = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


class MetricsMiddleware:
    """Counts and times every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                LATENCY.labels(scope["method"], _route(scope)).observe(time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            REQUESTS.labels(scope["method"], _route(scope), str(status)).inc()


class IntegrityCollector(Collector):
    """`auditkeep_integrity_ok{org}`: 1 while the organization's log verifies, 0 from a self-watch failure
    until a full verify passes again. Organizations the self-watch has not reached yet are not listed."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("auditkeep_integrity_ok",
                                  "1 while the organization's audit log verifies (self-watch), else 0",
                                  labels=["org"])
        with self.storage.read() as conn:
            for org, ok in selfwatch.all_states(conn):
                gauge.add_metric([org], 1.0 if ok else 0.0)
        yield gauge


def install(app: FastAPI) -> None:
    """Add the middleware and the /metrics endpoint."""
    app.add_middleware(MetricsMiddleware)
    # A registry of this app's own: the collector reads this app's database, and tests build many apps.
    integrity = CollectorRegistry(auto_describe=False)
    integrity.register(IntegrityCollector(app.state.storage))

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            body = generate_latest(registry)
        else:
            body = generate_latest()
        return Response(body + generate_latest(integrity), media_type=CONTENT_TYPE_LATEST)
