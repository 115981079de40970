"""`auditkeep alerts`: an organization's alert rules (issue #13; docs/alerts.md), and `alerts watch`, the
evaluator apart from `auditkeep serve`.

A rule is named by its id or its name. Channels come as JSON (`--notify`), from the argument, a file
(`@path`) or standard input (`-`); the command's own audit record never repeats them, since a webhook's
secret or a Slack URL is a credential.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from pydantic import TypeAdapter, ValidationError

from auditkeep.alerts import service
from auditkeep.alerts.templates import TEMPLATES
from auditkeep.cli._common import argument_text, fail, first_error, json_object, one_line_errors, origin_hiding, store
from auditkeep.errors import NotFoundError
from auditkeep.ingest.selfaudit import Origin
from auditkeep.schemas.alerts import AlertRuleCreate, AlertRulePublic, AlertRuleUpdate, Channel
from auditkeep.storage import Storage, identity
from auditkeep.storage import alerts as rule_rows

app = typer.Typer(help="Alert rules: be told when something happens in an organization's log.",
                  no_args_is_help=True)

Org = Annotated[str, typer.Option("--org", help="The organization's name.")]
Rule = Annotated[str, typer.Argument(help="The rule's id or name.")]


def _origin() -> Origin:
    return origin_hiding("--notify")


def _channels(text: str | None) -> list[Any]:
    if text is None:
        return []
    try:
        value = orjson.loads(argument_text(text))
        return TypeAdapter(list[Channel]).validate_python(value if isinstance(value, list) else [value])
    except orjson.JSONDecodeError as exc:
        raise fail(f"--notify is not JSON: {exc}") from None
    except ValidationError as exc:
        where, msg = first_error(exc)
        raise fail(f"--notify {where}: {msg}") from None


def _resolve(storage: Storage, org_name: str, rule: str) -> tuple[int, str]:
    with storage.read() as conn:
        org = identity.get_org(conn, org_name)
        for row in rule_rows.list_for_org(conn, org.id):
            if rule in (row.id, row.name):
                return org.id, row.id
    raise NotFoundError(f"no alert rule {rule!r} in organization {org_name!r}")


def _show(r: AlertRulePublic) -> None:
    typer.echo(orjson.dumps(r.model_dump(), option=orjson.OPT_INDENT_2).decode())


@app.command("create")
@one_line_errors
def create(
    *,
    org: Org,
    template: Annotated[str | None, typer.Option(help="A built-in rule: " + ", ".join(TEMPLATES) + ".")] = None,
    name: Annotated[str | None, typer.Option(help="A name unique in the organization (a template's title "
                                                  "by default).")] = None,
    filter_: Annotated[str | None, typer.Option("--filter", help='The GET\'s filters as JSON, e.g. '
                                                '\'{"action": "api_key.*"}\'.')] = None,
    count: Annotated[int, typer.Option(help="Fire when this many matching events...", min=1)] = 1,
    window: Annotated[int, typer.Option(help="...fall within this many seconds.", min=1)] = 60,
    group_by: Annotated[list[str] | None, typer.Option("--group-by", help="Count each value of this field "
                                                       "apart (repeatable), e.g. user_email.")] = None,
    cooldown: Annotated[int, typer.Option(help="Seconds a group stays quiet after it fired.", min=0)] = 0,
    notify: Annotated[str | None, typer.Option(help='Channels as JSON, @FILE or -, e.g. \'[{"kind": "email", '
                                               '"to": ["sec@example.com"]}]\'.')] = None,
) -> None:
    """Create a rule (or enable a template) and print it.

    Example: auditkeep alerts create --org acme --name key-changes --filter '{"action": "api_key.*"}'
    """
    channels = _channels(notify)
    with store() as storage:
        with storage.read() as conn:
            org_id = identity.get_org(conn, org).id
        if template is not None:
            _show(service.create_from_template(storage, org_id, template, origin=_origin(), actor=None,
                                               rule_name=name, notify=channels))
            return
        if name is None:
            raise fail("give --name (or --template NAME)")
        try:
            spec = AlertRuleCreate.model_validate({
                "name": name, "filter": json_object(filter_, "--filter") if filter_ else {},
                "threshold": {"count": count, "window_seconds": window}, "group_by": group_by or [],
                "notify": [c.model_dump(mode="json") for c in channels], "cooldown_seconds": cooldown})
        except ValidationError as exc:
            where, msg = first_error(exc)
            raise fail(f"{where or 'rule'}: {msg}") from None
        _show(service.create(storage, org_id, spec, origin=_origin(), actor=None))


@app.command("list")
@one_line_errors
def list_(org: Org) -> None:
    """One line a rule: id, name, state, threshold, last fired, last error."""
    with store() as storage:
        with storage.read() as conn:
            rows = rule_rows.list_for_org(conn, identity.get_org(conn, org).id)
        for row in rows:
            r = service.public(storage, row)
            group = f" by {','.join(r.group_by)}" if r.group_by else ""
            typer.echo(f"{r.id}\t{r.name}\t{r.state}\t{r.threshold.count} in {r.threshold.window_seconds} s{group}"
                       f"\tlast fired {r.last_fired_at or 'never'}\t{r.last_error or ''}".rstrip())


def _change(org: str, rule: str, change: AlertRuleUpdate) -> None:
    with store() as storage:
        org_id, rule_id = _resolve(storage, org, rule)
        _show(service.update(storage, org_id, rule_id, change, origin=_origin(), actor=None))


@app.command("enable")
@one_line_errors
def enable(org: Org, rule: Rule) -> None:
    """Count again, from the newest event (what happened while disabled does not fire)."""
    _change(org, rule, AlertRuleUpdate(enabled=True))


@app.command("disable")
@one_line_errors
def disable(org: Org, rule: Rule) -> None:
    """Stop counting; notifications still being retried stop too."""
    _change(org, rule, AlertRuleUpdate(enabled=False))


@app.command("delete")
@one_line_errors
def delete(org: Org, rule: Rule) -> None:
    """Delete a rule (its alert.fired events stay in the log)."""
    with store() as storage:
        org_id, rule_id = _resolve(storage, org, rule)
        service.delete(storage, org_id, rule_id, origin=_origin(), actor=None)
    typer.echo(f"deleted alert rule {rule}")


@app.command("test")
@one_line_errors
def test(org: Org, rule: Rule) -> None:
    """Send a notification marked test to each channel now; exit 1 when one does not take it."""
    with store() as storage:
        org_id, rule_id = _resolve(storage, org, rule)
        result = service.send_test(storage, org_id, rule_id)
    failed = [c for c in result["channels"] if not c["delivered"]]
    for i, c in enumerate(result["channels"]):
        typer.echo(f"{i}\t{c['kind']}\t{'delivered' if c['delivered'] else 'failed: ' + c['error']}")
    if failed:
        raise fail(f"{len(failed)} of {len(result['channels'])} channels did not take the test notification")


@app.command("watch")
@one_line_errors
def watch() -> None:
    """Evaluate every organization's rules until stopped (SIGINT or SIGTERM), apart from `auditkeep serve`.

    Several may run against one database: each rule is evaluated by one of them at a time. Set
    AUDITKEEP_ALERT_EVALUATOR=false on the servers to leave evaluation to these.
    """
    from auditkeep.alerts.evaluator import Evaluator
    from auditkeep.settings import get_settings

    with store() as storage:
        evaluator = Evaluator(storage, get_settings())
        typer.echo(f"evaluating alert rules as {evaluator.owner}", err=True)
        evaluator.run_in_foreground()
