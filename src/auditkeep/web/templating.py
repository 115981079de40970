"""Jinja2 for the console: autoescaping on for every template, whatever its name, and a few filters."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import HTMLResponse

from auditkeep.storage import selfwatch
from auditkeep.storage.sessions import ConsoleSession

TEMPLATES_DIR = Path(__file__).parent / "templates"


def pretty_json(value: Any) -> str:
    """A payload indented for reading (escaped by the template like any other text)."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def short_time(value: str | None) -> str:
    """`2026-11-25T14:03:22.123456Z` → `2026-11-25 14:03:22` (the column header says UTC)."""
    if not value:
        return ""
    return value[:19].replace("T", " ")


def short_datetime(value: datetime | None) -> str:
    """A stored datetime as `2026-11-25 14:03 UTC`."""
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if value is not None else ""


def actor(log: dict[str, Any]) -> str:
    """Who acted: the user's email, else the service account self-audit names, else a dash."""
    if log.get("user_email"):
        return str(log["user_email"])
    payload = log.get("payload")
    if isinstance(payload, dict) and isinstance(payload.get("service_account"), str):
        return f"service account {payload['service_account']}"
    return "—"


def status_class(status: str | None) -> str:
    """The badge colour of an event's status."""
    return {"success": "success", "failure": "failure"}.get(status or "", "neutral")


def _environment() -> Environment:
    # autoescape=True (not select_autoescape): every template escapes, so an event field holding
    # "<script>" is shown as text on every page.
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True, undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["pretty_json"] = pretty_json
    env.filters["short_time"] = short_time
    env.filters["dt"] = short_datetime
    env.filters["actor"] = actor
    env.filters["status_class"] = status_class
    return env


templates = Jinja2Templates(env=_environment())


def render(
    request: Request, name: str, session: ConsoleSession | None = None, *, status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render a page; `session` supplies the signed-in user and the CSRF token every form carries."""
    base: dict[str, Any] = {
        "session": session,
        "me": session.principal if session else None,
        "csrf_token": session.csrf_token if session else None,
        "path": request.url.path,
        "integrity_failures": _integrity_failures(request, session),
    }
    return templates.TemplateResponse(request, name, base | context, status_code=status_code)


def _integrity_failures(request: Request, session: ConsoleSession | None) -> list[dict[str, Any]]:
    """The signed-in organization's unresolved self-watch failures, for the red banner on every page
    (base.html; issue #13). One primary-key read a page."""
    if session is None:
        return []
    try:
        with request.app.state.storage.read() as conn:
            return selfwatch.failures(conn, session.principal.org_id)
    except SQLAlchemyError:
        # The page being rendered may be the one saying the database is unreachable (web/errors.py): it
        # must still render. Every page after the database is back shows the banner again.
        return []
