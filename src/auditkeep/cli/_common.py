"""What every command shares: opening the store, self-audit origin, and one-line errors."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from auditkeep.errors import AuditKeepError
from auditkeep.ingest.selfaudit import Origin
from auditkeep.storage import Storage, open_storage

P = ParamSpec("P")
R = TypeVar("R")

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise."""
    err_console.print(f"error: {message}", markup=False)
    return typer.Exit(code)


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
