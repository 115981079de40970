"""`/`, `/signin`, `/signout`: the sign-in form, signing in and out."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import RedirectResponse, Response

from auditkeep.api.deps import StorageDep
from auditkeep.auth.passwords import MAX_LENGTH
from auditkeep.ingest.selfaudit import audit
from auditkeep.settings import Settings
from auditkeep.storage import sessions
from auditkeep.web.deps import OptionalSession, PostSession, web_origin
from auditkeep.web.security import (
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    ConsoleRoute,
    clear_cookie,
    new_token,
    safe_next,
    set_cookie,
    tokens_match,
)
from auditkeep.web.signin import sign_in, utcnow
from auditkeep.web.templating import render

router = APIRouter(route_class=ConsoleRoute)


def home_of(session: sessions.ConsoleSession) -> str:
    """Where a signed-in user lands: admins on the audit log, everyone else on their API keys."""
    return "/audit-logs" if session.principal.is_admin else "/api-keys"


def _form(
    request: Request, *, status_code: int = 200, message: str | None = None, email: str = "",
    organization: str = "", needs_org: bool = False, next_path: str = "/",
) -> Response:
    """The sign-in form, with a fresh double-submit token in its cookie and hidden field."""
    token = request.cookies.get(SIGNIN_COOKIE)
    if not token or len(token) > 100:
        token = new_token()
    response = render(
        request, "signin.html", status_code=status_code, message=message, email=email,
        organization=organization, needs_org=needs_org, next_path=next_path, signin_token=token,
    )
    set_cookie(request, response, SIGNIN_COOKIE, token, max_age=None)
    return response


@router.get("/")
def home(
    request: Request, session: OptionalSession, next_path: Annotated[str, Query(alias="next")] = "/"
) -> Response:
    """Signed out: the sign-in form. Signed in: the user's first page."""
    if session is None:
        return _form(request, next_path=safe_next(next_path))
    return RedirectResponse(home_of(session), status_code=303)


@router.post("/signin")
def signin(
    *,
    request: Request,
    storage: StorageDep,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=MAX_LENGTH)] = "",
    organization: Annotated[str, Form(max_length=200)] = "",
    signin_token: Annotated[str, Form()] = "",
    next_field: Annotated[str, Form(alias="next")] = "/",
) -> Response:
    """Check the form's token, then the credentials (throttled); on success start a session."""
    next_path = safe_next(next_field)

    def again(status_code: int, message: str | None, needs_org: bool = False) -> Response:
        return _form(request, status_code=status_code, message=message, email=email, organization=organization,
                     needs_org=needs_org, next_path=next_path)

    if not tokens_match(request.cookies.get(SIGNIN_COOKIE), signin_token):
        return again(403, "The sign-in form expired. Please try again.")
    if not email.strip() or not password:
        return again(400, "Enter your email and password.")
    settings: Settings = request.app.state.settings
    max_age = settings.session_max_age_seconds
    outcome = sign_in(storage, email=email, password=password, org_name=organization.strip() or None,
                      origin=web_origin(request), now=utcnow(), max_age=timedelta(seconds=max_age))
    if outcome.token is None:
        response = again(outcome.status_code, outcome.message, outcome.needs_org)
        if outcome.retry_after is not None:
            response.headers["Retry-After"] = str(outcome.retry_after)
        return response
    if previous := request.cookies.get(SESSION_COOKIE):  # signing in again: the old session ends
        with storage.write() as conn:
            sessions.end_session(conn, previous)
    response = RedirectResponse(next_path, status_code=303)
    set_cookie(request, response, SESSION_COOKIE, outcome.token, max_age=max_age)
    clear_cookie(request, response, SIGNIN_COOKIE)
    return response


@router.post("/signout")
def signout(request: Request, storage: StorageDep, session: PostSession) -> Response:
    """End this session (server-side too: the cookie stops working even if it was copied)."""
    token = request.cookies.get(SESSION_COOKIE, "")
    with storage.write() as conn:
        sessions.end_session(conn, token)
    me = session.principal
    audit(storage, me.org_id, "user.logout", web_origin(request), actor=me, object_type="user",
          object_id=me.id, log_entry=f"{me.describe().capitalize()} signed out of the console")
    response = RedirectResponse("/", status_code=303)
    clear_cookie(request, response, SESSION_COOKIE)
    return response
