"""Creating and releasing legal holds, each a self-audit event (`hold.create`, `hold.release`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from auditkeep.auth.principals import Principal
from auditkeep.ids import new_event_uuid
from auditkeep.ingest.selfaudit import Origin, audit
from auditkeep.schemas.holds import HoldCreate, HoldPublic
from auditkeep.storage import Storage
from auditkeep.storage import holds as store
from auditkeep.storage.types import format_timestamp


def _who(origin: Origin, actor: Principal | None) -> str:
    if actor is not None:
        return actor.describe()
    extra = origin.extra
    return f"cli {extra.get('os_user', '?')}@{extra.get('host', '?')}" if origin.source == "cli" else origin.source


def public(hold: store.Hold) -> HoldPublic:
    return HoldPublic(
        id=hold.id, active=hold.active, reason=hold.reason, user_email=hold.user_email, user_id=hold.user_id,
        object_type=hold.object_type, object_id=hold.object_id, start=hold.start_ts, end=hold.end_ts,
        created_at=hold.created_at, created_by=hold.created_by, released_at=hold.released_at,
        released_by=hold.released_by, release_reason=hold.release_reason,
    )


def _criteria_text(hold: store.Hold) -> str:
    given = hold.criteria()
    if not given:
        return "every event"
    return ", ".join(f"{k}={format_timestamp(v) if isinstance(v, datetime) else v}" for k, v in given.items())


def _payload(hold: store.Hold) -> dict[str, Any]:
    return public(hold).model_dump(mode="json")


def create(storage: Storage, org_id: int, spec: HoldCreate, *, origin: Origin,
           actor: Principal | None) -> HoldPublic:
    """Place a hold; from its commit on, purge and erasure leave the events it covers alone."""
    hold = store.Hold(
        id=new_event_uuid(), org_id=org_id, reason=spec.reason, user_email=spec.user_email, user_id=spec.user_id,
        object_type=spec.object_type, object_id=spec.object_id,
        start_ts=spec.start.astimezone(UTC) if spec.start else None,
        end_ts=spec.end.astimezone(UTC) if spec.end else None,
        created_at=datetime.now(UTC), created_by=_who(origin, actor),
    )
    placed: list[store.Hold] = []

    def place(conn: sa.Connection) -> None:
        store.insert(conn, hold)
        placed.append(store.get(conn, org_id, hold.id))

    # One transaction: the hold and its hold.create event commit together or not at all.
    audit(storage, org_id, "hold.create", origin, actor=actor, also=place,
          log_entry=f"Legal hold {hold.id} placed on {_criteria_text(hold)}: {hold.reason}", payload=_payload(hold))
    return public(placed[0])


def release(storage: Storage, org_id: int, hold_id: str, reason: str, *, origin: Origin,
            actor: Principal | None) -> HoldPublic:
    """Release a hold (409 if it already was); what it covered is again subject to retention and erasure."""
    with storage.read() as conn:
        hold = store.get(conn, org_id, hold_id)
    at, by = datetime.now(UTC), _who(origin, actor)
    released: list[store.Hold] = []

    def release_it(conn: sa.Connection) -> None:
        # Refuses (ConflictError) a hold released meanwhile; the event is then not written either.
        released.append(store.release(conn, org_id, hold_id, at=at, by=by, reason=reason))

    audit(storage, org_id, "hold.release", origin, actor=actor, also=release_it,
          log_entry=f"Legal hold {hold.id} ({hold.reason}) released: {reason}",
          payload=_payload(replace(hold, released_at=at, released_by=by, release_reason=reason)))
    return public(released[0])
