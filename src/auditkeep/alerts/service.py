"""What an admin does with alert rules (API, CLI, console): each change is committed, then recorded as a
self-audit event (`alert_rule.create`, `alert_rule.update`, `alert_rule.delete`) that never carries a
channel's secret."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from auditkeep.alerts import notify
from auditkeep.alerts.evaluator import unsealed_channels
from auditkeep.alerts.templates import TEMPLATES
from auditkeep.auth.principals import Principal
from auditkeep.errors import ConflictError, NotFoundError
from auditkeep.ids import new_event_uuid
from auditkeep.ingest.selfaudit import Origin, audit
from auditkeep.schemas.alerts import SECRET_FIELDS, AlertRuleCreate, AlertRulePublic, AlertRuleUpdate, Threshold
from auditkeep.storage import Storage, identity
from auditkeep.storage import alerts as store
from auditkeep.storage import streams as stream_rows
from auditkeep.storage.types import format_timestamp
from auditkeep.streams import secrets

# Changes to what a rule counts: its window state no longer means anything, so it starts afresh (and a
# count in flight from before must not land: a new generation).
_RECOUNT = frozenset({"filter", "threshold", "group_by", "cooldown_seconds", "enabled"})


def _split(channels: list[Any]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Channels (validated models) as (public settings, secrets by index)."""
    plain: list[dict[str, Any]] = []
    sealed: dict[str, dict[str, Any]] = {}
    for i, channel in enumerate(channels):
        data = channel.model_dump(mode="json")
        hidden = SECRET_FIELDS[data["kind"]]
        plain.append({k: v for k, v in data.items() if k not in hidden})
        if hidden:
            sealed[str(i)] = {k: v for k, v in data.items() if k in hidden}
    return plain, sealed


def public(storage: Storage, row: store.RuleRow) -> AlertRulePublic:
    with storage.read() as conn:
        pending = store.pending_count(conn, row.id)
    state = "disabled" if not row.enabled else "failing" if row.last_error else "enabled"
    return AlertRulePublic(
        id=row.id, name=row.name, template=row.template, filter=row.filter,
        threshold=Threshold(count=row.threshold_count, window_seconds=row.window_seconds),
        group_by=row.group_by, notify=row.notify, cooldown_seconds=row.cooldown_seconds, enabled=row.enabled,
        state=state, evaluated_seq=row.evaluated_seq,
        last_fired_at=format_timestamp(row.last_fired_at) if row.last_fired_at else None,
        last_error=row.last_error, pending_notifications=pending,
        created_at=format_timestamp(row.created_at), updated_at=format_timestamp(row.updated_at),
    )


def _described(row: store.RuleRow) -> dict[str, Any]:
    """What a self-audit event says of a rule: everything but its channels' secrets."""
    return {"rule_id": row.id, "name": row.name, "template": row.template, "filter": row.filter,
            "threshold": {"count": row.threshold_count, "window_seconds": row.window_seconds},
            "group_by": row.group_by, "notify": row.notify, "cooldown_seconds": row.cooldown_seconds,
            "enabled": row.enabled}


def create(storage: Storage, org_id: int, spec: AlertRuleCreate, *, origin: Origin, actor: Principal | None,
           template: str | None = None) -> AlertRulePublic:
    """Make a rule; it counts the events stored after now."""
    rule_id = new_event_uuid()
    plain, sealed = _split(spec.notify)
    key = secrets.load_key(storage.settings.secrets_key_path)
    now = datetime.now(UTC)
    with storage.write() as conn:
        if any(r.name == spec.name for r in store.list_for_org(conn, org_id)):
            raise ConflictError(f"an alert rule named {spec.name!r} already exists")
        row = store.RuleRow(
            id=rule_id, org_id=org_id, name=spec.name, template=template,
            filter=spec.filter.model_dump(mode="json", exclude_none=True),
            threshold_count=spec.threshold.count, window_seconds=spec.threshold.window_seconds,
            group_by=list(spec.group_by), notify=plain, sealed_secrets=secrets.seal(key, rule_id, sealed),
            cooldown_seconds=spec.cooldown_seconds, enabled=spec.enabled,
            evaluated_seq=stream_rows.head_seq(conn, org_id), window_state={}, generation=0,
            last_fired_at=None, last_error=None, lease_owner=None, lease_until=None, created_at=now, updated_at=now,
        )
        store.insert(conn, row)
    audit(storage, org_id, "alert_rule.create", origin, actor=actor, object_type="alert_rule",
          log_entry=f"Alert rule {spec.name!r} created ({spec.threshold.count} in {spec.threshold.window_seconds} s)",
          payload=_described(row))
    return public(storage, row)


def create_from_template(storage: Storage, org_id: int, name: str, *, origin: Origin, actor: Principal | None,
                         rule_name: str | None = None, notify: list[Any] | None = None) -> AlertRulePublic:
    """Enable a built-in rule (alerts/templates.py), with the caller's channels."""
    template = TEMPLATES.get(name)
    if template is None:
        raise NotFoundError(f"no alert template {name!r} (there are: {', '.join(TEMPLATES)})")
    spec = AlertRuleCreate.model_validate({**template.rule, "name": rule_name or template.title,
                                           "notify": [c.model_dump(mode="json") for c in notify or []]})
    return create(storage, org_id, spec, origin=origin, actor=actor, template=name)


def update(storage: Storage, org_id: int, rule_id: str, change: AlertRuleUpdate, *, origin: Origin,
           actor: Principal | None) -> AlertRulePublic:
    """Enable, disable, rename, or change what a rule counts or whom it tells. Enabling starts counting
    at the newest event: a disabled rule does not watch, and enabling it does not alert on the past."""
    key = secrets.load_key(storage.settings.secrets_key_path)
    now = datetime.now(UTC)
    with storage.write() as conn:
        row = store.get(conn, org_id, rule_id, with_state=False)
        values: dict[str, Any] = {"updated_at": now}
        if change.name is not None and change.name != row.name:
            if any(r.name == change.name for r in store.list_for_org(conn, org_id)):
                raise ConflictError(f"an alert rule named {change.name!r} already exists")
            values["name"] = change.name
        if change.enabled is not None and change.enabled != row.enabled:
            values["enabled"] = change.enabled
            if change.enabled:
                values["evaluated_seq"], values["last_error"] = stream_rows.head_seq(conn, org_id), None
        if change.filter is not None:
            values["filter"] = change.filter.model_dump(mode="json", exclude_none=True)
        if change.threshold is not None:
            values["threshold_count"] = change.threshold.count
            values["window_seconds"] = change.threshold.window_seconds
            values["threshold"] = True  # named for the audit record; removed below
        if change.group_by is not None:
            values["group_by"] = list(change.group_by)
        if change.cooldown_seconds is not None:
            values["cooldown_seconds"] = change.cooldown_seconds
        if change.notify is not None:
            values["notify"], sealed = _split(change.notify)
            values["sealed_secrets"], values["last_error"] = secrets.seal(key, rule_id, sealed), None
        changed = sorted(k for k in values if k not in (
            "updated_at", "evaluated_seq", "last_error", "sealed_secrets", "threshold_count", "window_seconds"))
        values.pop("threshold", None)
        if _RECOUNT.intersection(changed):
            values.update(window_state={}, generation=row.generation + 1)
        if changed:
            store.update(conn, org_id, rule_id, **values)
        after = store.get(conn, org_id, rule_id, with_state=False)
    if changed:
        audit(storage, org_id, "alert_rule.update", origin, actor=actor, object_type="alert_rule",
              log_entry=f"Alert rule {after.name!r} changed: {', '.join(changed)}",
              payload={**_described(after), "changed": changed})
    return public(storage, after)


def delete(storage: Storage, org_id: int, rule_id: str, *, origin: Origin, actor: Principal | None) -> None:
    with storage.write() as conn:
        row = store.get(conn, org_id, rule_id, with_state=False)
        store.delete(conn, org_id, rule_id)
    audit(storage, org_id, "alert_rule.delete", origin, actor=actor, object_type="alert_rule",
          log_entry=f"Alert rule {row.name!r} deleted", payload=_described(row))


def send_test(storage: Storage, org_id: int, rule_id: str) -> dict[str, Any]:
    """Send a notification marked `"test": true` to each of the rule's channels now (nothing is recorded as
    fired); what each channel said, in order."""
    with storage.read() as conn:
        row = store.get(conn, org_id, rule_id, with_state=False)
        org_name = identity.get_org_by_id(conn, org_id).name
    key = secrets.load_key(storage.settings.secrets_key_path)
    test_id = new_event_uuid()
    body = {"id": test_id, "test": True, "organization": org_name, "rule": {"id": row.id, "name": row.name},
            "count": 0, "first_seq": 0, "last_seq": 0, "group": {}, "suppressed": 0, "event_uuid": None,
            "fired_at": format_timestamp(datetime.now(UTC))}
    results: list[dict[str, Any]] = []
    for i, channel in enumerate(unsealed_channels(key, row)):
        try:
            notify.send(channel, body, storage.settings, delivery_id=f"{test_id}.{i}")
            results.append({"kind": channel["kind"], "delivered": True, "error": None})
        except notify.NotifyError as exc:
            results.append({"kind": channel["kind"], "delivered": False, "error": str(exc)})
    return {"channels": results}
