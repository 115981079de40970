"""The web console (issue #5): server-rendered pages for signing in, the audit log and API keys.

`install(app)` is the one hook `create_app` calls: it adds the console's routes, its static files and
its HTML error pages. Every console response carries the security headers of web/security.py.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from auditkeep.web import errors
from auditkeep.web.routes import router
from auditkeep.web.security import ConsoleStaticFiles

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Mount the console on `app`: pages at /, assets at /static."""
    errors.install(app)
    app.include_router(router)
    app.mount("/static", ConsoleStaticFiles(directory=STATIC_DIR), name="static")
