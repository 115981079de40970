"""Dependencies of console pages: the signed-in session, admin-only pages, and CSRF checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Form, Request

from auditkeep.api.deps import StorageDep, origin_of
from auditkeep.ingest.selfaudit import Origin, audit
from auditkeep.storage import Storage, sessions
from auditkeep.storage.sessions import ConsoleSession
from auditkeep.web.errors import CsrfError, PageForbidden, SignInRequired
from auditkeep.web.security import SESSION_COOKIE, tokens_match


def web_origin(request: Request) -> Origin:
    """The request as a self-audit origin with source "web"."""
    return origin_of(request, source="web")


def optional_session(request: Request, storage: StorageDep) -> ConsoleSession | None:
    """The live session of this request's cookie, if any."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 100:
        return None
    with storage.read() as conn:
        return sessions.get_session(conn, token, datetime.now(UTC))


def required_session(session: Annotated[ConsoleSession | None, Depends(optional_session)]) -> ConsoleSession:
    if session is None:
        raise SignInRequired("sign in first")
    return session


OptionalSession = Annotated[ConsoleSession | None, Depends(optional_session)]
CurrentSession = Annotated[ConsoleSession, Depends(required_session)]


def refuse(request: Request, storage: Storage, session: ConsoleSession, message: str) -> PageForbidden:
    """Self-audit a refused page (like the API's 403s, issue #2) and return the error to raise."""
    me = session.principal
    audit(storage, me.org_id, "request.denied", web_origin(request), actor=me, status="failure",
          log_entry=f"Refused {request.method} {request.url.path} to {me.describe()}: {message}",
          payload={"required": "admin"})
    return PageForbidden(message, session)


def admin_session(request: Request, storage: StorageDep, session: CurrentSession) -> ConsoleSession:
    """The session of an admin; anyone else gets the 403 page (and the refusal is audited)."""
    if not session.principal.is_admin:
        raise refuse(request, storage, session,
                     f"Only admins of {session.principal.org_name} can open this page.")
    return session


AdminSession = Annotated[ConsoleSession, Depends(admin_session)]


def csrf_session(session: CurrentSession, csrf_token: Annotated[str, Form()] = "") -> ConsoleSession:
    """The session of a POST whose form carries this session's CSRF token (synchronizer token)."""
    if not tokens_match(session.csrf_token, csrf_token):
        raise CsrfError("The form was sent without a valid security token (it may be from an old page or "
                        "another site). Go back, reload the page and try again.", session)
    return session


PostSession = Annotated[ConsoleSession, Depends(csrf_session)]
