"""Bench only: the real app writing canonical form version 1, to compare ingest with version 2 (issue #12).

Loaded by bench/ingest_export.py (`--canonical-compare`) as a uvicorn factory (`_v1_app:create_app`), so
every worker process sets the version before serving; `create_app_v2` is the same server app unchanged,
started the same way, so the two sides differ only in the canonical version. Version 1 events verify as
before (docs/integrity.md §1); the service writes version 2 and has no switch of its own outside tests and
benchmarks.
"""

from __future__ import annotations

from fastapi import FastAPI

import auditkeep.ingest.service as service
from auditkeep.api.app import create_server_app


def create_app() -> FastAPI:
    service.WRITE_VERSION = 1
    return create_server_app()


def create_app_v2() -> FastAPI:
    return create_server_app()
