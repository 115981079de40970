"""Saving and deleting the audit log page's searches in the console (issue #13); each a self-audit event,
as through `/api/v1/saved_searches`."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from auditkeep import saved_searches as service
from auditkeep.api.deps import StorageDep
from auditkeep.errors import ConflictError, NotFoundError
from auditkeep.schemas.stats import SavedSearchCreate
from auditkeep.web.deps import PostSession, refuse, web_origin
from auditkeep.web.errors import PageNotFound
from auditkeep.web.security import ConsoleRoute

router = APIRouter(route_class=ConsoleRoute)


@router.post("/audit-logs/saved-searches")
def save_search(request: Request, storage: StorageDep, session: PostSession, *,
                name: Annotated[str, Form(max_length=400)] = "",
                query: Annotated[str, Form(max_length=4000)] = "") -> Response:
    """Save the page's current filters under `name`, then show them again with a note."""
    me = session.principal
    if not me.is_admin:
        raise refuse(request, storage, session, f"Only admins of {me.org_name} can save searches here.")
    back = service.normalize_query(query)
    try:
        spec = SavedSearchCreate(name=name.strip(), query=back)
        saved = service.create(storage, me.org_id, spec, origin=web_origin(request), actor=me)
    except ValidationError:
        note = {"saved_error": "Give the search a name of 1 to 200 characters."}
    except ConflictError as exc:
        note = {"saved_error": str(exc).capitalize() + "."}
    else:
        note = {"saved": saved.name}
    sep = "&" if back else ""
    return RedirectResponse(f"/audit-logs?{back}{sep}{urlencode(note)}", status_code=303)


@router.post("/audit-logs/saved-searches/{search_id}/delete")
def delete_search(search_id: str, request: Request, storage: StorageDep, session: PostSession) -> Response:
    me = session.principal
    if not me.is_admin:
        raise refuse(request, storage, session, f"Only admins of {me.org_name} can delete saved searches here.")
    try:
        gone = service.delete(storage, me.org_id, search_id, origin=web_origin(request), actor=me)
    except NotFoundError:
        raise PageNotFound("There is no such saved search in your organization.", session) from None
    return RedirectResponse(f"/audit-logs?{urlencode({'deleted_search': gone.name})}", status_code=303)
