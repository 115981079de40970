"""Property: any change to any stored field of any event is detected, at or before that event (issue #3)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import rfc8785
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from auditkeep.ingest.verification import verify_org
from auditkeep.storage import Storage
from auditkeep.storage.types import format_timestamp
from tests.conftest import make_tenant
from tests.integrity_db._tamper import seed, stored_row, tampering, update_columns

EVENTS = 4
_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12)
_safe_int = st.integers(-(2**53 - 1), 2**53 - 1)
_hex = st.binary(min_size=32, max_size=32).map(bytes.hex)
_payload = st.dictionaries(_text, _safe_int | _text | st.booleans(), max_size=3).map(
    lambda d: rfc8785.dumps(d).decode()
)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "action": _text | st.none(), "client_ip": _text, "event_uuid": st.uuids().map(str),
    "is_support_user": st.sampled_from([True, False, None]), "log_entry": _text | st.none(),
    "object_id": _safe_int | st.none(), "object_type": _text | st.none(), "payload": _payload | st.none(),
    "referer": _text | st.none(), "request_type": _text | st.none(), "source": _text | st.none(),
    "status": _text | st.none(), "url": _text, "user_agent": _text | st.none(), "user_email": _text | st.none(),
    "user_id": _safe_int | st.none(), "timestamp": st.datetimes(timezones=st.just(UTC)),
    "prev_hash": _hex, "hash": _hex, "seq": st.integers(EVENTS + 1, 2**40),
}


@st.composite
def changes(draw: st.DrawFn) -> tuple[int, str, Any]:
    column = draw(st.sampled_from(sorted(FIELDS)))
    return draw(st.integers(1, EVENTS)), column, draw(FIELDS[column])


def _comparable(column: str, value: Any) -> Any:
    if column == "timestamp" and not isinstance(value, str):
        return format_timestamp(value)
    if column == "is_support_user" and value is not None:
        return bool(value)
    return value


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(change=changes())
def test_any_change_to_any_stored_field_is_detected(storage: Storage, change: tuple[int, str, Any]) -> None:
    seq, column, value = change
    tenant = make_tenant(storage)
    seed(storage, tenant.org.id, EVENTS)
    if column == "timestamp" and storage.dialect == "sqlite":
        value = format_timestamp(value)
    with tampering(storage) as conn:
        old = seq if column == "seq" else stored_row(conn, storage, tenant.org.id, seq)[column]
        assume(_comparable(column, old) != _comparable(column, value))
        update_columns(conn, storage, tenant.org.id, seq, {column: value})
    result = verify_org(storage, tenant.org.id, workers=1)
    assert result.report.broken is not None, (seq, column, value)
    assert result.report.broken.seq <= seq
