"""The web console (issue #5): server-rendered pages for signing in, the audit log and API keys.

`install(app)` is the one hook `create_app` calls: it adds the console's routes, its static files and
its HTML error pages, and the security headers every console response carries.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Mount the console on `app`: pages at /, assets at /static."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
