"""`/streams`: the organization's streams with their state and lag, and what an admin does with them:
create a webhook stream, pause, resume, replay from a seq, send a test event, delete (issue #10).

Admins only, like `/api/v1/streams`. Every change goes through streams/service.py, so the console's
changes are self-audited exactly as the API's are, with source "web".
"""

from __future__ import annotations

from typing import Annotated, Any, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from auditkeep.api.deps import StorageDep
from auditkeep.errors import ConflictError, InvalidRangeError, NotFoundError
from auditkeep.schemas.streams import StreamCreate, StreamFormat, StreamPublic, StreamUpdate, WebhookConfig
from auditkeep.storage import Storage
from auditkeep.storage import streams as store
from auditkeep.storage.sessions import ConsoleSession
from auditkeep.streams import service
from auditkeep.web.deps import AdminSession, PostSession, refuse, web_origin
from auditkeep.web.errors import PageNotFound
from auditkeep.web.security import ConsoleRoute
from auditkeep.web.templating import render

router = APIRouter(route_class=ConsoleRoute)

FORMATS: tuple[str, ...] = get_args(StreamFormat)
# What the list says after a change (Post/Redirect/Get): the query names the change and the stream's id,
# never free text, so a link cannot make the page say something the server did not.
NOTICES = {
    "created": "Stream {name!r} was created. Its events are delivered in the background.",
    "paused": "Stream {name!r} is paused. It keeps its place; resuming delivers from there.",
    "resumed": "Stream {name!r} was resumed. Delivery continues from seq {from_seq}.",
    "replayed": "Stream {name!r} will deliver again from seq {from_seq}.",
    "deleted": "The stream was deleted. The events it delivered stay in the audit log.",
}
# Form fields by the location pydantic gives their errors, to name them as the form does.
FIELD_LABELS = {
    ("name",): "Name", ("url",): "URL", ("secret",): "Secret", ("batch_size",): "Batch size",
    ("format",): "Format", ("filter", "action"): "Action filter",
}


def admin_post_session(request: Request, storage: StorageDep, session: PostSession) -> ConsoleSession:
    """A POST with a valid CSRF token from an admin; anyone else gets the 403 page (audited)."""
    if not session.principal.is_admin:
        raise refuse(request, storage, session, f"Only admins of {session.principal.org_name} can manage streams.")
    return session


AdminPostSession = Annotated[ConsoleSession, Depends(admin_post_session)]


def human_seconds(seconds: float) -> str:
    """A lag as people say it: `0 s`, `42 s`, `5 min 3 s`, `2 h 10 min`, `3 d 4 h`."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _streams(storage: Storage, org_id: int) -> list[StreamPublic]:
    with storage.read() as conn:
        rows = store.list_for_org(conn, org_id)
    return [service.public(storage, row) for row in rows]


def _stream(storage: Storage, session: ConsoleSession, stream_id: str) -> store.StreamRow:
    """The organization's stream, or the 404 page (another organization's streams do not exist here)."""
    try:
        with storage.read() as conn:
            return store.get(conn, session.principal.org_id, stream_id)
    except NotFoundError:
        raise PageNotFound("There is no such stream in this organization.", session) from None


def _page(request: Request, storage: Storage, session: ConsoleSession, *, status_code: int = 200,
          error: str | None = None, notice: str | None = None, test_result: dict[str, Any] | None = None,
          form: dict[str, str] | None = None) -> Response:
    return render(
        request, "streams.html", session, status_code=status_code,
        streams=_streams(storage, session.principal.org_id), error=error, notice=notice,
        test_result=test_result, formats=FORMATS, human_seconds=human_seconds,
        form={"name": "", "url": "", "batch_size": "500", "format": "datafold", "action": "", "start": "new",
              **(form or {})},
    )


@router.get("/streams")
def streams_page(request: Request, storage: StorageDep, session: AdminSession, done: str = "",
                 stream: str = "") -> Response:
    """Each stream's state, cursor, lag and last error, with its actions, and the new-stream form."""
    notice = None
    if done in NOTICES:
        shown = {s.id: s for s in _streams(storage, session.principal.org_id)}
        if done == "deleted" or stream in shown:
            target = shown.get(stream)
            notice = NOTICES[done].format(name=target.name if target else "",
                                          from_seq=target.delivered_seq + 1 if target else "")
    return _page(request, storage, session, notice=notice)


def _problem(exc: ValidationError, prefix: tuple[str, ...] = ()) -> str:
    """The first thing wrong with the form, named as the form names it."""
    first = exc.errors()[0]
    loc = (*prefix, *(str(p) for p in first["loc"]))
    label = FIELD_LABELS.get(loc[-1:]) if loc[:1] != ("filter",) else FIELD_LABELS.get(loc[:2])
    return f"{label or '.'.join(loc)}: {first['msg']}."


@router.post("/streams")
def create_stream(
    request: Request, storage: StorageDep, session: AdminPostSession, *,
    name: Annotated[str, Form(max_length=400)] = "",
    url: Annotated[str, Form(max_length=4000)] = "",
    secret: Annotated[str, Form(max_length=1000)] = "",
    batch_size: Annotated[str, Form(max_length=20)] = "",
    format: Annotated[str, Form(max_length=20)] = "datafold",
    action: Annotated[str, Form(max_length=400)] = "",
    start: Annotated[str, Form(max_length=10)] = "new",
) -> Response:
    """Create a webhook stream. The secret is never rendered back, not even when the form is refused."""
    me = session.principal
    form = {"name": name.strip(), "url": url.strip(), "batch_size": batch_size.strip(), "format": format,
            "action": action.strip(), "start": start}
    config: dict[str, Any] = {"url": form["url"], "secret": secret}
    if form["batch_size"]:
        config["batch_size"] = form["batch_size"]
    try:
        # The kind's model first, so a bad URL or secret is named as its field rather than inside "config".
        webhook = WebhookConfig.model_validate(config)
    except ValidationError as exc:
        return _page(request, storage, session, status_code=400, error=_problem(exc), form=form)
    try:
        spec = StreamCreate.model_validate({
            "name": form["name"], "kind": "webhook", "config": webhook.model_dump(mode="json"),
            "format": format, "filter": {"action": form["action"]} if form["action"] else {},
            "start_seq": 1 if start == "all" else None,
        })
    except ValidationError as exc:
        return _page(request, storage, session, status_code=400, error=_problem(exc), form=form)
    try:
        created = service.create(storage, me.org_id, spec, origin=web_origin(request), actor=me)
    except ConflictError as exc:
        return _page(request, storage, session, status_code=409, error=f"{str(exc).capitalize()}.", form=form)
    return RedirectResponse(f"/streams?{urlencode({'done': 'created', 'stream': created.id})}", status_code=303)


def _update(request: Request, storage: Storage, session: ConsoleSession, stream_id: str, *,
            change: StreamUpdate, done: str) -> Response:
    me = session.principal
    _stream(storage, session, stream_id)
    try:
        service.update(storage, me.org_id, stream_id, change, origin=web_origin(request), actor=me)
    except NotFoundError:  # deleted meanwhile, from another tab or the API
        raise PageNotFound("There is no such stream in this organization.", session) from None
    return RedirectResponse(f"/streams?{urlencode({'done': done, 'stream': stream_id})}", status_code=303)


@router.post("/streams/{stream_id}/pause")
def pause_stream(stream_id: str, request: Request, storage: StorageDep, session: AdminPostSession) -> Response:
    return _update(request, storage, session, stream_id, change=StreamUpdate(state="paused"), done="paused")


@router.post("/streams/{stream_id}/resume")
def resume_stream(stream_id: str, request: Request, storage: StorageDep, session: AdminPostSession) -> Response:
    return _update(request, storage, session, stream_id, change=StreamUpdate(state="active"), done="resumed")


@router.post("/streams/{stream_id}/replay")
def replay_stream(stream_id: str, request: Request, storage: StorageDep, session: AdminPostSession,
                  from_seq: Annotated[str, Form(max_length=20)] = "") -> Response:
    """Deliver again from seq `from_seq` (1: everything retained)."""
    row = _stream(storage, session, stream_id)
    seq = int(from_seq) if from_seq.strip().isdigit() else 0
    if seq < 1:
        return _page(request, storage, session, status_code=400,
                     error=f"Replay of {row.name!r}: give the seq to deliver again from, a whole number from 1.")
    try:
        return _update(request, storage, session, stream_id, change=StreamUpdate(replay_from_seq=seq),
                       done="replayed")
    except (InvalidRangeError, ValidationError) as exc:
        message = str(exc) if isinstance(exc, InvalidRangeError) else _problem(exc)
        return _page(request, storage, session, status_code=400, error=f"Replay of {row.name!r}: {message}.")


@router.post("/streams/{stream_id}/test")
def test_stream(stream_id: str, request: Request, storage: StorageDep, session: AdminPostSession) -> Response:
    """Send one test record now, outside the cursor, and show what the destination said."""
    row = _stream(storage, session, stream_id)
    result = service.send_test(storage, session.principal.org_id, stream_id, origin=web_origin(request),
                               actor=session.principal)
    return _page(request, storage, session, test_result={"name": row.name, **result})


@router.get("/streams/{stream_id}/delete")
def confirm_delete(stream_id: str, request: Request, storage: StorageDep, session: AdminSession) -> Response:
    """Ask before deleting: the stream's place in the log goes with it."""
    stream = service.public(storage, _stream(storage, session, stream_id))
    return render(request, "stream_delete_confirm.html", session, stream=stream)


@router.post("/streams/{stream_id}/delete")
def delete_stream(stream_id: str, request: Request, storage: StorageDep, session: AdminPostSession) -> Response:
    me = session.principal
    _stream(storage, session, stream_id)
    service.delete(storage, me.org_id, stream_id, origin=web_origin(request), actor=me)
    return RedirectResponse("/streams?done=deleted", status_code=303)
