"""`/alerts`: the organization's alert rules with their state, last firing and last error; enable or
disable one, send a test notification, or enable a built-in rule in one click (issue #13).

Admins only, like `/api/v1/alert_rules`. Every change goes through alerts/service.py, so the console's
changes are self-audited exactly as the API's are, with source "web".
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from auditkeep.alerts import service
from auditkeep.alerts.templates import TEMPLATES
from auditkeep.api.deps import StorageDep
from auditkeep.errors import ConflictError, NotFoundError
from auditkeep.schemas.alerts import AlertRulePublic, AlertRuleUpdate
from auditkeep.storage import Storage
from auditkeep.storage import alerts as store
from auditkeep.storage.sessions import ConsoleSession
from auditkeep.web.deps import AdminSession, web_origin
from auditkeep.web.errors import PageNotFound
from auditkeep.web.routes.streams import AdminPostSession, human_seconds
from auditkeep.web.security import ConsoleRoute
from auditkeep.web.templating import render

router = APIRouter(route_class=ConsoleRoute)

# What the list says after a change (Post/Redirect/Get): the query names the change and the rule's id,
# never free text, so a link cannot make the page say something the server did not.
NOTICES = {
    "created": "Alert rule {name!r} is on. It counts the events stored from now on.",
    "enabled": "Alert rule {name!r} is on again. It counts from the newest event.",
    "disabled": "Alert rule {name!r} is off. It counts nothing until it is enabled.",
}


def _rules(storage: Storage, org_id: int) -> list[AlertRulePublic]:
    with storage.read() as conn:
        rows = store.list_for_org(conn, org_id)
    return [service.public(storage, row) for row in rows]


def _rule(storage: Storage, session: ConsoleSession, rule_id: str) -> store.RuleRow:
    """The organization's rule, or the 404 page (another organization's rules do not exist here)."""
    try:
        with storage.read() as conn:
            return store.get(conn, session.principal.org_id, rule_id, with_state=False)
    except NotFoundError:
        raise PageNotFound("There is no such alert rule in this organization.", session) from None


def _page(request: Request, storage: Storage, session: ConsoleSession, *, status_code: int = 200,
          error: str | None = None, notice: str | None = None,
          test_result: dict[str, Any] | None = None) -> Response:
    rules = _rules(storage, session.principal.org_id)
    return render(request, "alerts.html", session, status_code=status_code, rules=rules, error=error,
                  notice=notice, test_result=test_result, templates=list(TEMPLATES.values()),
                  used_templates={r.template for r in rules if r.template}, human_seconds=human_seconds)


@router.get("/alerts")
def alerts_page(request: Request, storage: StorageDep, session: AdminSession, done: str = "",
                rule: str = "") -> Response:
    """Each rule's state, threshold, last firing and last error, with its actions, and the templates."""
    notice = None
    if done in NOTICES:
        shown = {r.id: r for r in _rules(storage, session.principal.org_id)}
        if rule in shown:
            notice = NOTICES[done].format(name=shown[rule].name)
    return _page(request, storage, session, notice=notice)


@router.post("/alerts/templates/{name}")
def enable_template(name: str, request: Request, storage: StorageDep, session: AdminPostSession) -> Response:
    """Enable a built-in rule, with no channel: its alert.fired events are the record until channels are
    added through the API or the CLI."""
    if name not in TEMPLATES:
        raise PageNotFound("There is no such alert template.", session)
    me = session.principal
    try:
        created = service.create_from_template(storage, me.org_id, name, origin=web_origin(request), actor=me)
    except ConflictError as exc:
        return _page(request, storage, session, status_code=409, error=f"{str(exc).capitalize()}.")
    return RedirectResponse(f"/alerts?{urlencode({'done': 'created', 'rule': created.id})}", status_code=303)


def _switch(request: Request, storage: Storage, session: ConsoleSession, rule_id: str, on: bool) -> Response:
    me = session.principal
    _rule(storage, session, rule_id)
    try:
        service.update(storage, me.org_id, rule_id, AlertRuleUpdate(enabled=on), origin=web_origin(request),
                       actor=me)
    except NotFoundError:  # deleted meanwhile, from another tab or the API
        raise PageNotFound("There is no such alert rule in this organization.", session) from None
    done = "enabled" if on else "disabled"
    return RedirectResponse(f"/alerts?{urlencode({'done': done, 'rule': rule_id})}", status_code=303)


@router.post("/alerts/{rule_id}/enable")
def enable_rule(rule_id: str, request: Request, storage: StorageDep, session: AdminPostSession) -> Response:
    return _switch(request, storage, session, rule_id, on=True)


@router.post("/alerts/{rule_id}/disable")
def disable_rule(rule_id: str, request: Request, storage: StorageDep, session: AdminPostSession) -> Response:
    return _switch(request, storage, session, rule_id, on=False)


@router.post("/alerts/{rule_id}/test")
def test_rule(rule_id: str, request: Request, storage: StorageDep, session: AdminPostSession) -> Response:
    """Send a test notification to each channel now, and show what each said."""
    row = _rule(storage, session, rule_id)
    result = service.send_test(storage, session.principal.org_id, rule_id)
    return _page(request, storage, session, test_result={"name": row.name, **result})
