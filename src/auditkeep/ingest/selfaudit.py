"""The service's record of its own security-relevant actions, filed in the acting organization's log.

Reads of the audit log, keys created and revoked, users and service accounts created or changed,
refused requests, verification runs and checkpoints all come through `audit()` (issue #2, #3).
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from auditkeep.auth.principals import Principal
from auditkeep.ids import new_event_uuid
from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import NewEvent
from auditkeep.integrity.canonical import canonical_json
from auditkeep.storage import Storage
from auditkeep.storage.types import format_timestamp

_LIMITS = {"url": 8192, "referer": 8192, "user_agent": 2048, "log_entry": 65_536}


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an action came from: the request (api, web) or the operator's shell (cli)."""

    source: str
    client_ip: str
    url: str
    request_type: str | None = None
    referer: str | None = None
    user_agent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def cli(cls, argv: list[str]) -> Origin:
        """The operator running a CLI command on this host."""
        return cls(
            source="cli",
            client_ip="127.0.0.1",
            url="cli:" + " ".join(["auditkeep", *argv]),
            request_type="CLI",
            extra={"host": socket.gethostname(), "os_user": getpass.getuser()},
        )


def _clip(name: str, value: str | None) -> str | None:
    limit = _LIMITS.get(name)
    if value is None or limit is None or len(value) <= limit:
        return value
    return value[: limit - 1] + "…"


def audit(
    storage: Storage,
    org_id: int,
    action: str,
    origin: Origin,
    *,
    actor: Principal | None = None,
    status: str = "success",
    object_type: str | None = None,
    object_id: int | None = None,
    log_entry: str,
    payload: dict[str, Any] | None = None,
    also: Callable[[sa.Connection], object] | None = None,
) -> str:
    """Record one self-audit event in `org_id`'s log; returns its uuid. `also` makes a change in the same
    transaction (see ingest.service.record_batch), so the change and its record commit together."""
    event = self_audit_event(action, origin, actor=actor, status=status, object_type=object_type,
                             object_id=object_id, log_entry=log_entry, payload=payload)
    return record_events(storage, org_id, [event], also=also)[0]


def self_audit_event(
    action: str,
    origin: Origin,
    *,
    actor: Principal | None = None,
    status: str = "success",
    object_type: str | None = None,
    object_id: int | None = None,
    log_entry: str,
    payload: dict[str, Any] | None = None,
) -> NewEvent:
    """One self-audit event, ready for `record_events` (its uuid is `event.log["event_uuid"]`)."""
    body: dict[str, Any] = dict(origin.extra)
    if actor is not None and actor.key_prefix:
        body["key_prefix"] = actor.key_prefix
    if actor is not None and actor.kind == "service_account":
        body["service_account"] = actor.name
    body.update(payload or {})
    log: dict[str, Any] = {
        "action": action,
        "client_ip": origin.client_ip,
        "event_uuid": new_event_uuid(),
        "is_support_user": actor.is_support if actor is not None else None,
        "log_entry": _clip("log_entry", log_entry),
        "object_id": object_id,
        "object_type": object_type,
        "payload": body or None,
        "referer": _clip("referer", origin.referer),
        "request_type": origin.request_type,
        "source": origin.source,
        "status": status,
        "timestamp": format_timestamp(datetime.now(UTC)),
        "url": _clip("url", origin.url),
        "user_agent": _clip("user_agent", origin.user_agent),
        "user_email": actor.user_email if actor is not None else None,
        "user_id": actor.user_id if actor is not None else None,
    }
    payload_json = canonical_json(body).decode() if body else None
    return NewEvent(log, payload_json, frozenset(log), uuid_given=False)
