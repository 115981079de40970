"""What every command shares: opening the store, self-audit origin, and one-line errors."""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console

from auditkeep.errors import AuditKeepError
from auditkeep.ingest.selfaudit import Origin
from auditkeep.storage import Storage, open_storage

P = ParamSpec("P")
R = TypeVar("R")

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise.

    Called while handling a connection failure (the SDK's TransportError, whose text carries httpx's
    repr), it says what happened in words instead, whatever the command: `error: cannot reach
    http://127.0.0.1:8000 (connection refused)`.
    """
    handling = sys.exc_info()[1]
    if handling is not None and (plain := connection_failure(handling)) is not None:
        message = plain
    err_console.print(f"error: {' '.join(message.split())}", markup=False)
    return typer.Exit(code)


def _reason(exc: BaseException) -> str:
    """The innermost cause of a connection failure, in words."""
    import httpx

    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        if isinstance(exc, OSError) and exc.errno is not None:
            break
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "no such host"
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def connection_failure(exc: BaseException) -> str | None:
    """`cannot reach URL (reason)` or `lost the connection to URL (reason)` for a connection failure
    (the SDK's TransportError or httpx's own), else None."""
    import httpx

    from auditkeep.client import TransportError

    cause: BaseException | None = exc
    if isinstance(exc, TransportError):
        cause = exc.__cause__
    if not isinstance(cause, httpx.TransportError):
        return None
    try:
        url = cause.request.url
        where = f"{url.scheme}://{url.netloc.decode()}"
    except RuntimeError:  # httpx raises it when the error carries no request
        where = "the server"
    reached = not isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout)
    return f"{'lost the connection to' if reached else 'cannot reach'} {where} ({_reason(cause)})"


def one_line_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn auditkeep's and the database's errors into one line on stderr and exit status 1."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except AuditKeepError as exc:
            raise fail(str(exc)) from None
        except Exception as exc:
            from sqlalchemy.exc import SQLAlchemyError

            if isinstance(exc, SQLAlchemyError):
                raise fail(f"database error: {str(exc).splitlines()[0]}") from None
            raise

    return wrapper


@contextmanager
def store() -> Iterator[Storage]:
    """The database at AUDITKEEP_DATABASE_URL, brought up to date."""
    storage = open_storage()
    try:
        yield storage
    finally:
        storage.dispose()


def cli_origin() -> Origin:
    """This invocation, as a self-audit origin (source "cli")."""
    return Origin.cli(sys.argv[1:])


def origin_hiding(option: str) -> Origin:
    """This invocation as a self-audit origin, with `option`'s value shown as `<name>`: it may hold a
    secret (a stream's --config, an alert rule's --notify), and the audit record must never repeat one."""
    shown = f"<{option.lstrip('-')}>"
    argv: list[str] = []
    hide = False
    for arg in sys.argv[1:]:
        if hide:
            argv.append(shown)
            hide = False
        elif arg == option:
            argv.append(arg)
            hide = True
        else:
            argv.append(f"{option}={shown}" if arg.startswith(f"{option}=") else arg)
    return Origin.cli(argv)


def argument_text(text: str) -> str:
    """An option's text as given, read from a file (`@path`) or standard input (`-`)."""
    return sys.stdin.read() if text == "-" else Path(text[1:]).read_text() if text.startswith("@") else text


def json_object(text: str, what: str) -> dict[str, Any]:
    """A JSON object from an option (`argument_text`); `error: <what> is not JSON: …` otherwise."""
    try:
        value = orjson.loads(argument_text(text))
    except orjson.JSONDecodeError as exc:
        raise fail(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise fail(f"{what} must be a JSON object")
    return value


def first_error(exc: ValidationError) -> tuple[str, str]:
    """Where the first of a model's errors lies (dotted, "" for the whole model) and what it says, without
    pydantic's "Value error, " (the message a validator raised is the user's sentence)."""
    first = exc.errors()[0]
    return ".".join(str(p) for p in first["loc"]), str(first["msg"]).removeprefix("Value error, ")


def invalid_option(exc: ValidationError, whole: str) -> str:
    """`--option.path: message` for the first of a model's errors, its fields named as the command's options
    (`start_seq` as `--start-seq`); `whole: message` for an error of the whole model."""
    where, msg = first_error(exc)
    return f"{'--' + where.replace('_', '-') if where else whole}: {msg}"
