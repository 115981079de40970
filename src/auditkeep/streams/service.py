"""What an admin does with streams (API, CLI, console): each change is committed, then recorded as a
self-audit event (`stream.create`, `stream.update`, `stream.delete`) that never carries a secret."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from auditkeep.auth.principals import Principal
from auditkeep.errors import ConflictError, InvalidRangeError
from auditkeep.ids import new_event_uuid
from auditkeep.ingest.selfaudit import Origin, audit
from auditkeep.schemas.streams import SECRET_FIELDS, StreamCreate, StreamPublic, StreamUpdate, validate_config
from auditkeep.storage import Storage, identity
from auditkeep.storage import streams as store
from auditkeep.storage.types import format_timestamp
from auditkeep.streams import formats, secrets
from auditkeep.streams.forwarder import FAILING_AFTER
from auditkeep.streams.sinks import Batch, DeliveryError, open_sink

# Changes after which a batch read before them must not move the cursor: what is delivered, where, in
# which form, or from where. Pausing, resuming and renaming leave a batch in flight valid (its
# acknowledgement still counts), so they keep the generation.
_NEW_GENERATION = frozenset({"config", "filter", "format", "replay_from_seq"})


def _split(kind: str, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`config` (validated, JSON-ready) as (public settings, secrets)."""
    secret_names = SECRET_FIELDS.get(kind, frozenset())
    return ({k: v for k, v in config.items() if k not in secret_names},
            {k: v for k, v in config.items() if k in secret_names})


def _validated(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    return validate_config(kind, config).model_dump(mode="json")


def public(storage: Storage, row: store.StreamRow, now: datetime | None = None) -> StreamPublic:
    """The stream as the API shows it, with its lag measured now."""
    now = now or datetime.now(UTC)
    with storage.read() as conn:
        head = store.head_seq(conn, row.org_id)
        oldest = store.received_at(conn, row.org_id, [row.delivered_seq + 1]) if head > row.delivered_seq else {}
    lag_seconds = max(0.0, (now - oldest[row.delivered_seq + 1]).total_seconds()) if oldest else 0.0
    state = "failing" if row.state == "active" and row.failures >= FAILING_AFTER else row.state
    key = secrets.load_key(storage.settings.secrets_key_path)
    return StreamPublic(
        id=row.id, name=row.name, kind=row.kind, format=row.format, config=row.config,
        secrets_set=_secrets_set(key, row),
        filter=row.filter, state=state, delivered_seq=row.delivered_seq,
        lag_events=max(0, head - row.delivered_seq), lag_seconds=round(lag_seconds, 3),
        last_error=row.last_error,
        last_delivery_at=format_timestamp(row.last_delivery_at) if row.last_delivery_at else None,
        failures=row.failures, created_at=format_timestamp(row.created_at),
        updated_at=format_timestamp(row.updated_at),
    )


def _secrets_set(key: bytes, row: store.StreamRow) -> list[str]:
    """Names of the stream's secrets that hold a value; none known when this node's key does not open
    them (the forwarder then reports that in last_error), so one such stream never breaks a listing."""
    try:
        return sorted(k for k, v in secrets.unseal(key, row.id, row.sealed_secrets).items() if v)
    except secrets.SecretsKeyError:
        return []


def _described(row: store.StreamRow) -> dict[str, Any]:
    """What a self-audit event says of a stream: everything but its secrets."""
    return {"stream_id": row.id, "name": row.name, "kind": row.kind, "format": row.format,
            "config": row.config, "filter": row.filter, "state": row.state, "delivered_seq": row.delivered_seq}


def create(storage: Storage, org_id: int, spec: StreamCreate, *, origin: Origin,
           actor: Principal | None) -> StreamPublic:
    """Make a stream; it starts at `spec.start_seq` (None: after the newest event stored now)."""
    stream_id = new_event_uuid()
    plain, secret = _split(spec.kind, _validated(spec.kind, spec.config))
    key = secrets.load_key(storage.settings.secrets_key_path)
    now = datetime.now(UTC)
    with storage.write() as conn:
        if any(s.name == spec.name for s in store.list_for_org(conn, org_id)):
            raise ConflictError(f"a stream named {spec.name!r} already exists")
        head = store.head_seq(conn, org_id)
        start = head if spec.start_seq is None else spec.start_seq - 1
        if start > head:
            raise InvalidRangeError(f"start_seq {spec.start_seq} is past the newest event (seq {head})",
                                    param="start_seq", value=spec.start_seq)
        row = store.StreamRow(
            id=stream_id, org_id=org_id, name=spec.name, kind=spec.kind, format=spec.format, config=plain,
            sealed_secrets=secrets.seal(key, stream_id, secret),
            filter=spec.filter.model_dump(mode="json", exclude_none=True), state="active",
            delivered_seq=start, generation=0, failures=0, last_error=None, last_delivery_at=None,
            next_attempt_at=None, lease_owner=None, lease_until=None, created_at=now, updated_at=now,
        )
        store.insert(conn, row)
    audit(storage, org_id, "stream.create", origin, actor=actor, object_type="stream",
          log_entry=f"Stream {spec.name!r} ({spec.kind}, {spec.format}) created from seq {start + 1}",
          payload=_described(row))
    return public(storage, row, now)


def update(storage: Storage, org_id: int, stream_id: str, change: StreamUpdate, *, origin: Origin,
           actor: Principal | None) -> StreamPublic:
    """Pause, resume, replay, rename, refilter or reconfigure; a replay or a new destination starts a new
    generation, so a batch in flight from before cannot move the cursor."""
    key = secrets.load_key(storage.settings.secrets_key_path)
    now = datetime.now(UTC)
    with storage.write() as conn:
        row = store.get(conn, org_id, stream_id)
        values: dict[str, Any] = {"updated_at": now}
        changed: list[str] = []
        if change.name is not None and change.name != row.name:
            values["name"], changed = change.name, [*changed, "name"]
        if change.state is not None:
            values["state"], changed = change.state, [*changed, "state"]
            values["next_attempt_at"] = None  # resume now, whatever the backoff said
        if change.format is not None:
            values["format"], changed = change.format, [*changed, "format"]
        if change.filter is not None:
            values["filter"], changed = change.filter.model_dump(mode="json", exclude_none=True), [*changed, "filter"]
        if change.config is not None:
            merged = {**row.config, **secrets.unseal(key, row.id, row.sealed_secrets), **change.config}
            plain, secret = _split(row.kind, _validated(row.kind, merged))
            values["config"], values["sealed_secrets"] = plain, secrets.seal(key, row.id, secret)
            changed.append("config")
        if change.replay_from_seq is not None:
            head = store.head_seq(conn, org_id)
            if change.replay_from_seq > head + 1:
                raise InvalidRangeError(f"replay_from_seq {change.replay_from_seq} is past the newest event "
                                        f"(seq {head})", param="replay_from_seq", value=change.replay_from_seq)
            values["delivered_seq"] = change.replay_from_seq - 1
            changed.append("replay_from_seq")
        if changed:
            if _NEW_GENERATION.intersection(changed):
                values["generation"] = row.generation + 1
            if _NEW_GENERATION.intersection(changed) or change.state == "active":
                values.update(failures=0, last_error=None, next_attempt_at=None)
            store.update(conn, org_id, stream_id, **values)
        after = store.get(conn, org_id, stream_id)
    if changed:
        what = ", ".join(changed)
        replay = f" (replay from seq {change.replay_from_seq})" if change.replay_from_seq is not None else ""
        audit(storage, org_id, "stream.update", origin, actor=actor, object_type="stream",
              log_entry=f"Stream {after.name!r} changed: {what}{replay}",
              payload={**_described(after), "changed": changed,
                       "secrets_changed": sorted(set(change.config or {}) & SECRET_FIELDS.get(row.kind, set()))})
    return public(storage, after, now)


def delete(storage: Storage, org_id: int, stream_id: str, *, origin: Origin, actor: Principal | None) -> None:
    with storage.write() as conn:
        row = store.get(conn, org_id, stream_id)
        store.delete(conn, org_id, stream_id)
    audit(storage, org_id, "stream.delete", origin, actor=actor, object_type="stream",
          log_entry=f"Stream {row.name!r} deleted at delivered seq {row.delivered_seq}", payload=_described(row))


def send_test(storage: Storage, org_id: int, stream_id: str, *, origin: Origin,
              actor: Principal | None) -> dict[str, Any]:
    """Send one clearly marked test record (`"test": true`, action `auditkeep.stream_test`, no seq) to the
    destination now, outside the cursor; what the destination said. The attempt is a self-audit event
    (`stream.test`): it sends data out of the service, as a stream does."""
    import orjson

    with storage.read() as conn:
        row = store.get(conn, org_id, stream_id)
        org_name = identity.get_org_by_id(conn, org_id).name
    key = secrets.load_key(storage.settings.secrets_key_path)
    now = format_timestamp(datetime.now(UTC))
    uuid = new_event_uuid()
    record = {"test": True, "action": "auditkeep.stream_test", "event_uuid": uuid, "timestamp": now,
              "log_entry": f"Test event from auditkeep stream {row.name!r}; not part of the audit log"}
    records = formats.convert(row.format, [orjson.dumps(record).decode()], org_name)  # in the stream's format
    batch = Batch(stream_id=row.id, org_id=org_id, org_name=org_name, records=records,
                  seqs=[0], event_uuids=[uuid], test=True)
    hidden = secrets.unseal(key, row.id, row.sealed_secrets)
    sink = open_sink(row.kind, row.id, {**row.config, **hidden}, storage)
    result: dict[str, Any] = {"delivered": True, "error": None}
    try:
        sink.deliver(batch)
    except DeliveryError as exc:
        result = {"delivered": False, "error": str(exc)}
    finally:
        sink.close()
    error = result["error"]
    # A destination's error text is the record's only free text: a secret it echoes (a token in a URL, a
    # password in a broker's refusal) must not reach the log.
    for value in hidden.values():
        if error is not None and isinstance(value, str) and value:
            error = error.replace(value, "[secret]")
    outcome = "delivered" if result["delivered"] else f"not delivered: {error}"
    audit(storage, org_id, "stream.test", origin, actor=actor, object_type="stream",
          status="success" if result["delivered"] else "failure",
          log_entry=f"Test event sent to stream {row.name!r}: {outcome}",
          payload={**_described(row), "test_event_uuid": uuid, "delivered": result["delivered"], "error": error})
    return result
