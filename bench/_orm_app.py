"""Bench only: the conventional FastAPI + SQLAlchemy ORM export that auditkeep's is measured against (issue #14).

What a FastAPI tutorial builds for "GET all audit logs": a mapped class over the same `events` table, a
Session per request, the rows loaded as ORM objects, each validated into the Pydantic `AuditLogs` model
and serialized by FastAPI's `response_model`, and Starlette's GZipMiddleware for clients that ask for
gzip. It skips authentication and the read's self-audit record, which auditkeep pays for, so the
comparison favours it. Served by uvicorn: `uvicorn _orm_app:create_app --factory` with
AUDITKEEP_DATABASE_URL and BENCH_ORG_ID set (bench/export_wire.py does that).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from sqlalchemy.orm import Session, registry

from auditkeep.schemas.audit_logs import LOG_FIELDS, ApiGetAuditLogs, AuditLogs
from auditkeep.storage import tables
from auditkeep.storage.types import format_timestamp


class Event:
    """One row of `events`, as the ORM loads it."""

    org_id: int
    seq: int
    timestamp: datetime


registry().map_imperatively(Event, tables.events)


def create_app() -> FastAPI:
    url = os.environ["AUDITKEEP_DATABASE_URL"]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = sa.create_engine(url)
    org_id = int(os.environ["BENCH_ORG_ID"])
    app = FastAPI()
    app.add_middleware(GZipMiddleware, minimum_size=1000)

    @app.get("/logs", response_model=ApiGetAuditLogs)
    def get_logs() -> dict[str, Any]:
        with Session(engine) as session:
            rows = session.scalars(
                sa.select(Event).where(Event.org_id == org_id).order_by(Event.timestamp, Event.seq)).all()
            logs = []
            for row in rows:
                fields = {name: getattr(row, name) for name in LOG_FIELDS}
                fields["timestamp"] = format_timestamp(row.timestamp)
                # SQLite's column holds the payload's text as given (storage/types.JsonText); psycopg decodes
                # PostgreSQL's json itself. An ORM's JSON type would decode it on load either way.
                if isinstance(fields["payload"], str):
                    fields["payload"] = json.loads(fields["payload"])
                logs.append(AuditLogs.model_validate(fields))
            return {"logs": logs}

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ok"}

    return app
