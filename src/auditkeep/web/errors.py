"""The console's refusals and their HTML pages (the API's JSON errors live in api/errors.py).

These exceptions belong to the web layer only: a page that needs a signed-in user raises
SignInRequired and the visitor is sent to the sign-in form; other refusals render a page.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from starlette.responses import RedirectResponse, Response

from auditkeep.storage.sessions import ConsoleSession
from auditkeep.web.security import SESSION_COOKIE, apply_headers, clear_cookie
from auditkeep.web.templating import render


class ConsoleError(Exception):
    """A page the console refuses to show."""

    status_code = 400
    title = "Something went wrong"

    def __init__(self, message: str, session: ConsoleSession | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.session = session


class SignInRequired(ConsoleError):
    """No live session: go to the sign-in form, and come back afterwards."""

    status_code = 303


class PageForbidden(ConsoleError):
    status_code = 403
    title = "Not allowed"


class PageNotFound(ConsoleError):
    status_code = 404
    title = "Not found"


class CsrfError(ConsoleError):
    status_code = 403
    title = "This form has expired"


async def _console_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleError)
    if isinstance(exc, SignInRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response: Response = RedirectResponse(
            "/" if request.method != "GET" or target == "/" else f"/?next={quote(target)}", status_code=303
        )
        if request.cookies.get(SESSION_COOKIE):
            clear_cookie(request, response, SESSION_COOKIE)  # expired or unknown: drop it
    else:
        response = render(request, "error.html", exc.session, status_code=exc.status_code,
                          title=exc.title, message=exc.message)
    return apply_headers(request, response)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ConsoleError, _console_error)
