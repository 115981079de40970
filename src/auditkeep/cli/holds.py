"""`auditkeep holds`: legal holds (issue #12). A held event is never purged nor erased until released."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from auditkeep.cli._common import cli_origin, fail, invalid_option, one_line_errors, store
from auditkeep.holds import service
from auditkeep.schemas.holds import HoldCreate, HoldPublic
from auditkeep.storage import holds as hold_rows
from auditkeep.storage import identity
from auditkeep.storage.types import format_timestamp

app = typer.Typer(help="Legal holds: keep events from retention and erasure until released.",
                  no_args_is_help=True)

Org = Annotated[str, typer.Option("--org", help="The organization's name.")]
Reason = Annotated[str, typer.Option("--reason", help="Why (recorded with the hold and in the log).")]


def _when(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise fail(f"{option}: not an ISO 8601 date-time: {text!r}", 2) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _stamp(value: datetime | None) -> str:
    return format_timestamp(value) if value is not None else ""


def _line(h: HoldPublic) -> str:
    criteria = [f"{k}={v}" for k, v in (("user_email", h.user_email), ("user_id", h.user_id),
                                        ("object_type", h.object_type), ("object_id", h.object_id),
                                        ("start", _stamp(h.start) or None), ("end", _stamp(h.end) or None))
                if v is not None]
    state = "active" if h.active else f"released {_stamp(h.released_at)} by {h.released_by}: {h.release_reason}"
    return (f"{h.id}\t{state}\tcreated {_stamp(h.created_at)} by {h.created_by}\t"
            f"{' '.join(criteria) or 'every event'}\t{h.reason}")


@app.command("create")
@one_line_errors
def create(
    *,
    org: Org,
    reason: Reason,
    user_email: Annotated[str | None, typer.Option("--user-email", help="Events of this email (any case).")] = None,
    user_id: Annotated[int | None, typer.Option("--user-id", help="Events of this user id.")] = None,
    object_type: Annotated[str | None, typer.Option("--object-type", help="Events on objects of this type.")] = None,
    object_id: Annotated[int | None, typer.Option("--object-id", help="... with this id (needs --object-type).")]
    = None,
    start: Annotated[str | None, typer.Option("--start", help="Events whose timestamp is at or after this "
                                                              "(ISO 8601; naive = UTC).")] = None,
    end: Annotated[str | None, typer.Option("--end", help="Events whose timestamp is before this.")] = None,
) -> None:
    """Place a legal hold on the events matching every criterion given (none: the whole log); prints its id.

    Example: auditkeep holds create --org acme --reason "Case 24-cv-1021" --user-email ann@example.com
    """
    if object_id is not None and object_type is None:
        raise fail("--object-id needs --object-type (an object id means something only within its type)", 2)
    data: dict[str, Any] = {"reason": reason, "user_email": user_email, "user_id": user_id,
                            "object_type": object_type, "object_id": object_id,
                            "start": _when(start, "--start"), "end": _when(end, "--end")}
    try:
        spec = HoldCreate.model_validate(data)
    except ValidationError as exc:
        raise fail(invalid_option(exc, "hold"), 2) from None
    with store() as storage:
        with storage.read() as conn:
            org_id = identity.get_org(conn, org).id
        hold = service.create(storage, org_id, spec, origin=cli_origin(), actor=None)
    typer.echo(hold.id)


@app.command("list")
@one_line_errors
def list_(
    org: Org,
    active: Annotated[bool, typer.Option("--active", help="Only holds not released.")] = False,
) -> None:
    """One line a hold, oldest first: id, state, who placed it and when, criteria, reason."""
    with store() as storage, storage.read() as conn:
        holds = hold_rows.list_for_org(conn, identity.get_org(conn, org).id, active_only=active)
    for h in holds:
        typer.echo(_line(service.public(h)))


@app.command("release")
@one_line_errors
def release(
    hold_id: Annotated[str, typer.Argument(metavar="ID", help="The hold's id (from holds create / holds list).")],
    reason: Reason,
) -> None:
    """Release a hold: the events it covered are again subject to retention and erasure.

    Example: auditkeep holds release 0193c0de-... --reason "Case dismissed"
    """
    if not reason.strip():
        raise fail("--reason must not be blank", 2)
    with store() as storage:
        with storage.read() as conn:
            org_id = hold_rows.find(conn, hold_id).org_id
        hold = service.release(storage, org_id, hold_id, reason, origin=cli_origin(), actor=None)
    typer.echo(f"released legal hold {hold.id} ({hold.reason})")
