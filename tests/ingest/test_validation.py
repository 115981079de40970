"""ingest.validation: the single payload walk (validity and the canonical fast path) and the skipped text
check agree with the definitions they replace."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from auditkeep.ingest.validation import MAX_PAYLOAD_DEPTH, EventValidationError, _payload_json, parse_events
from auditkeep.schemas.events import MAX_SAFE_INTEGER

_KEYS = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=6)
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(), st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=8),
)
_JSON = st.recursive(
    _SCALARS, lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(_KEYS, children, max_size=4)),
    max_leaves=16,
)


def _reference_problem(value: Any, depth: int = 1) -> str | None:
    """The checks as first written (issue #2): recursive, isinstance-based."""
    if depth > MAX_PAYLOAD_DEPTH:
        return f"payload is nested deeper than {MAX_PAYLOAD_DEPTH} levels"
    if isinstance(value, dict):
        for k, v in value.items():
            if "\x00" in k:
                return "payload keys must not contain NUL characters"
            if (why := _reference_problem(v, depth + 1)) is not None:
                return why
        return None
    if isinstance(value, list):
        for v in value:
            if (why := _reference_problem(v, depth + 1)) is not None:
                return why
        return None
    if isinstance(value, str):
        return "payload strings must not contain NUL characters" if "\x00" in value else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int) and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return "payload integers must lie within ±(2**53 - 1) to survive JSON round trips"
    if isinstance(value, float) and not math.isfinite(value):
        return "payload numbers must be finite"
    return None


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _JSON, max_size=6))
def test_payload_walk_matches_the_reference_checks_and_rfc8785(payload: dict[str, Any]) -> None:
    """Same first reason as the reference checks; else exactly rfc8785's bytes, via either path."""
    text, why = _payload_json(payload)
    assert why == _reference_problem(payload)
    if why is None:
        assert text == rfc8785.dumps(payload).decode()


def test_payload_nested_past_the_limit_is_refused() -> None:
    deep: Any = 1
    for _ in range(MAX_PAYLOAD_DEPTH):
        deep = [deep]
    assert _payload_json({"a": deep})[1] == f"payload is nested deeper than {MAX_PAYLOAD_DEPTH} levels"


@pytest.mark.parametrize("text", ['"a\\u0000b"', '"\\u0000"'])
def test_nul_in_a_field_is_refused_with_the_field_name(text: str) -> None:
    """A body with the \\u0000 escape takes the full text check."""
    body = f'[{{"client_ip": "192.0.2.1", "url": "u", "action": {text}}}]'.encode()
    with pytest.raises(EventValidationError) as exc:
        parse_events(body, datetime.now(UTC))
    assert exc.value.errors[0]["loc"] == ["body", 0]
    assert "action must not contain NUL characters" in exc.value.errors[0]["msg"]


def test_escaped_backslash_before_u0000_is_plain_text() -> None:
    """`\\\\u0000` is a backslash and "u0000", not NUL: the full check runs and accepts it."""
    body = orjson.dumps([{"client_ip": "192.0.2.1", "url": "u", "action": "\\u0000"}])
    assert parse_events(body, datetime.now(UTC))[0].log["action"] == "\\u0000"


@pytest.mark.parametrize(("given", "stored"), [("192.0.2.1", "192.0.2.1"), ("2001:DB8::1", "2001:db8::1"),
                                                ("::ffff:192.0.2.1", "::ffff:c000:201")])
def test_client_ip_is_normalized_like_ipaddress(given: str, stored: str) -> None:
    body = orjson.dumps([{"client_ip": given, "url": "u"}])
    assert parse_events(body, datetime.now(UTC))[0].log["client_ip"] == stored


@pytest.mark.parametrize("bad", ["192.0.2.01", "192.0.2", "192.0.2.1 ", "256.0.0.1", "١.2.3.4"])  # noqa: RUF001 - a non-ASCII digit on purpose
def test_client_ip_that_ipaddress_refuses_is_refused(bad: str) -> None:
    with pytest.raises(EventValidationError) as exc:
        parse_events(orjson.dumps([{"client_ip": bad, "url": "u"}]), datetime.now(UTC))
    assert exc.value.errors[0]["loc"] == ["body", 0, "client_ip"]


def test_timestamp_text_is_the_api_form() -> None:
    body = orjson.dumps([{"client_ip": "192.0.2.1", "url": "u", "timestamp": "2024-05-01T14:00:00.5+02:00"},
                         {"client_ip": "192.0.2.1", "url": "u", "timestamp": "0999-01-01T00:00:00"}])
    logs = [e.log for e in parse_events(body, datetime.now(UTC))]
    assert [log["timestamp"] for log in logs] == ["2024-05-01T12:00:00.500000Z", "0999-01-01T00:00:00.000000Z"]
