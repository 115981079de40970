"""The application factory."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import anyio.to_thread
from fastapi import FastAPI

from auditkeep import __version__
from auditkeep.alerts.evaluator import Evaluator
from auditkeep.api import docs, errors, metrics, ratelimit, request_limits
from auditkeep.api.routes import (
    alert_rules,
    audit_log_stats,
    audit_logs,
    erasures,
    evidence,
    health,
    holds,
    integrity,
    saved_searches,
    streams,
)
from auditkeep.ingest.reads import close_recorders
from auditkeep.logs import configure_logging
from auditkeep.rollup.roller import Roller
from auditkeep.schemas.audit_logs import ApiDownloadAuditLogs
from auditkeep.schemas.events import AuditLogCreate
from auditkeep.search.indexer import Indexer
from auditkeep.selfwatch.watcher import Watcher
from auditkeep.settings import Settings, get_settings
from auditkeep.storage import Storage, open_storage
from auditkeep.storage.partition_keeper import PartitionKeeper
from auditkeep.streams.forwarder import Forwarder
from auditkeep.web import install as install_console

_GET_BODY = {
    "content": {
        "application/json": {
            "schema": {
                "anyOf": [{"$ref": "#/components/schemas/ApiDownloadAuditLogs"}, {"type": "null"}],
                "title": "Data",
            }
        }
    }
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus what the hand-parsed bodies need, so /openapi.json matches the spec."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema["paths"]["/api/v1/audit_logs"]["get"]["requestBody"] = _GET_BODY
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        ref = "#/components/schemas/{model}"
        for model in (ApiDownloadAuditLogs, AuditLogCreate):
            components[model.__name__] = model.model_json_schema(ref_template=ref)
        # FastAPI's ValidationError also lists `input` and `ctx`, which its 422 bodies carry; the spec's does
        # not. The spec's schema does not forbid extra properties, so those bodies still match it, and
        # /openapi.json keeps the spec's schema exactly (issue #9).
        for extra in ("input", "ctx"):
            components["ValidationError"]["properties"].pop(extra, None)
        schema["security"] = [{"ApiKeyAuth": []}]
        errors.declare_error_responses(schema)
        app.openapi_schema = schema
    return app.openapi_schema


class _Background(Protocol):
    """Work the app runs beside requests in a thread of its own (streams, index, alerts, self-watch,
    partitions)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def create_app(settings: Settings | None = None, storage: Storage | None = None, *,
               forwarder: bool = False, alerts: bool = False, indexer: bool = False,
               selfwatch: bool = False, partitions: bool = False, roller: bool = False) -> FastAPI:
    """Build the auditkeep app. Without `storage`, opens (and migrates) AUDITKEEP_DATABASE_URL. With
    `forwarder`, the app delivers streams in a background thread while it runs (streams/forwarder.py);
    with `alerts`, it evaluates alert rules in another (alerts/evaluator.py); with `indexer`, it keeps the
    search index behind `q` up with ingest (search/indexer.py); with `roller`, the stats rollup
    (rollup/roller.py); with `selfwatch`, it verifies its own log
    continuously (selfwatch/watcher.py); with `partitions`, on PostgreSQL it keeps the events table's
    partitions, one node at a time (storage/partition_keeper.py)."""
    settings = settings or get_settings()
    owns_storage = storage is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        storage = app.state.storage
        # Started in this order and stopped in the reverse one (each finishes its piece of work in hand
        # and gives back its leases).
        candidates: tuple[_Background | None, ...] = (
            Forwarder(storage, settings) if forwarder else None,
            Indexer(storage, settings) if indexer else None,
            Roller(storage, settings) if roller else None,
            Evaluator(storage, settings) if alerts else None,
            Watcher(storage, settings) if selfwatch else None,
            PartitionKeeper(storage, settings) if partitions and storage.dialect == "postgresql" else None,
        )
        loops = [loop for loop in candidates if loop is not None]
        for loop in loops:
            loop.start()
        yield
        for loop in reversed(loops):
            await anyio.to_thread.run_sync(loop.stop)
        # Reads answered so far are committed; this flushes their records to disk (ingest/reads.py).
        await anyio.to_thread.run_sync(close_recorders, app.state.storage)
        if owns_storage:
            app.state.storage.dispose()

    configure_logging(settings.log_level)
    app = FastAPI(
        title="auditkeep",
        version=__version__,
        description="Tamper-evident audit logs behind Datafold's audit log API.",
        lifespan=lifespan,
        # /docs is served from the package (api/docs.py), not a CDN; ReDoc, CDN-only, is left out.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.storage = storage or open_storage(settings=settings)
    errors.install(app)
    metrics.install(app)
    ratelimit.install(app, settings)
    request_limits.install(app, settings)  # outermost: sizes are checked before anything reads the body
    app.include_router(health.router)
    app.include_router(audit_log_stats.router)
    app.include_router(audit_logs.router)
    app.include_router(saved_searches.router)
    app.include_router(integrity.router)
    app.include_router(evidence.router)
    app.include_router(erasures.router)
    app.include_router(streams.router)
    app.include_router(alert_rules.router)
    app.include_router(holds.router)
    install_console(app)
    docs.install(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


# Python's cyclic collector runs every 700 container allocations and, now and then, walks every object the
# process holds. A 5,000-event batch makes ~100,000 containers (models, dicts, lists), nearly all freed by
# reference counting, so those passes find little: in-process ingest spent ~25% of validation's CPU in
# them (100,000 events, SQLite: validation 24.5 -> 18.5 us an event, recording 28.2 -> 25.1 with the
# settings below; docs/benchmarks.md). Freezing moves what startup built (modules, the app, its routes)
# out of the collector's sight; the higher threshold lets a batch's short-lived objects die first.
GC_THRESHOLD = (20_000, 50, 100)


def create_server_app() -> FastAPI:
    """`create_app` for a server process (`auditkeep serve`): the app, then the collector tuned for it.

    Only here, not in create_app: tests and embedding applications keep their own collector settings.
    """
    settings = get_settings()
    app = create_app(settings, forwarder=settings.forwarder, alerts=settings.alert_evaluator,
                     indexer=settings.search_indexer, selfwatch=settings.self_watch, partitions=True,
                     roller=settings.stats_roller)
    gc.set_threshold(*GC_THRESHOLD)
    gc.freeze()
    return app
