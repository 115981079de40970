"""Canonical form (RFC 8785 JCS of the 17 fields plus seq) and the hash chain: known answers and the
fast path's agreement with the reference `rfc8785` implementation."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from auditkeep.integrity import merkle
from auditkeep.integrity.canonical import canonical_bytes, canonical_json
from auditkeep.integrity.chain import ZERO_HASH, ZERO_HASH_HEX, chain_hash

# The worked example of docs/integrity.md; change one and change the other.
EXAMPLE_1: dict[str, Any] = {
    "action": "document.update",
    "client_ip": "203.0.113.7",
    "event_uuid": "7f6c3a2e-1b4d-4e8f-9a0b-5c6d7e8f9a0b",
    "is_support_user": False,
    "log_entry": 'Renamed "Q1" → "Q2"\n',
    "object_id": 42,
    "object_type": "document",
    "payload": {"title": "Plan", "b": 2, "a": [1, True, None], "A": {"z": "é"}},
    "referer": None,
    "request_type": "PATCH",
    "source": "web",
    "status": "success",
    "timestamp": "2024-05-01T12:34:56.789012Z",
    "url": "https://app.example.com/docs/42",
    "user_agent": "curl/8.5.0",
    "user_email": "alice@example.com",
    "user_id": 7,
}
EXAMPLE_1_CANONICAL = (
    '{"action":"document.update","client_ip":"203.0.113.7","event_uuid":"7f6c3a2e-1b4d-4e8f-9a0b-5c6d7e8f9a0b",'
    '"is_support_user":false,"log_entry":"Renamed \\"Q1\\" → \\"Q2\\"\\n","object_id":42,'
    '"object_type":"document","payload":{"A":{"z":"é"},"a":[1,true,null],"b":2,"title":"Plan"},'
    '"referer":null,"request_type":"PATCH","seq":1,"source":"web","status":"success",'
    '"timestamp":"2024-05-01T12:34:56.789012Z","url":"https://app.example.com/docs/42",'
    '"user_agent":"curl/8.5.0","user_email":"alice@example.com","user_id":7}'
).encode()
EXAMPLE_1_HASH = "2f1c8f22827aef6f8ba31c43a2db6bca34b0777405007b244eff68c6f5a5540f"
EXAMPLE_2: dict[str, Any] = {
    **EXAMPLE_1,
    "action": "document.delete",
    "event_uuid": "0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5",
    "is_support_user": None,
    "log_entry": None,
    "payload": None,
    "request_type": "DELETE",
    "timestamp": "2024-05-01T12:35:00.000000Z",
}
EXAMPLE_2_HASH = "731a62e1d4a2142739c7df9704414f0ce039171aebce86065916a32087590ebf"
EXAMPLE_ROOT_2 = "e1996282ffebcd53c9d359397d8d455fe8db1a395705d8bbf7d6f8aa9030926d"


def test_example_event_has_the_pinned_canonical_bytes() -> None:
    canonical = canonical_bytes(EXAMPLE_1, 1)
    assert canonical == EXAMPLE_1_CANONICAL
    assert len(canonical) == 511


def test_example_chain_has_the_pinned_hashes_and_root() -> None:
    h1 = chain_hash(ZERO_HASH, canonical_bytes(EXAMPLE_1, 1))
    h2 = chain_hash(h1, canonical_bytes(EXAMPLE_2, 2))
    assert h1.hex() == EXAMPLE_1_HASH
    assert h1 == hashlib.sha256(bytes(32) + EXAMPLE_1_CANONICAL).digest()
    assert h2.hex() == EXAMPLE_2_HASH
    assert merkle.root([merkle.leaf_hash(h1), merkle.leaf_hash(h2)]).hex() == EXAMPLE_ROOT_2
    assert ZERO_HASH_HEX == "0" * 64


def test_rfc8785_number_and_string_example() -> None:
    """RFC 8785 §3.2.2's example: ECMAScript number form, minimal string escaping."""
    value = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
        "literals": [None, True, False],
    }
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_json(value) == expected.encode()


def test_rfc8785_key_order_is_utf16_code_units() -> None:
    """RFC 8785 §3.2.3's example: U+1F600 (surrogates D83D DE00) sorts before U+FB33."""
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys = list(orjson.loads(canonical_json(value)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_integers_beyond_two_to_the_53_are_refused() -> None:
    assert canonical_json({"n": 2**53 - 1}) == b'{"n":9007199254740991}'
    with pytest.raises(rfc8785.IntegerDomainError):
        canonical_json({"n": 2**53})


def test_seq_is_part_of_the_canonical_form() -> None:
    assert canonical_bytes(EXAMPLE_1, 1) != canonical_bytes(EXAMPLE_1, 2)
    assert b'"seq":1,' in canonical_bytes(EXAMPLE_1, 1)


_SPECIAL_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0xE000, max_codepoint=0xFFFF),
        st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF),
        st.characters(max_codepoint=0x7F),
    ),
    max_size=6,
)
_TEXT = st.one_of(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12), _SPECIAL_TEXT)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXT,
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(_TEXT, children, max_size=5)
    ),
    max_leaves=20,
)


def _assert_same_as_reference(value: dict[str, Any]) -> None:
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.IntegerDomainError:
        with pytest.raises(rfc8785.IntegerDomainError):
            canonical_json(value)
    else:
        assert canonical_json(value) == expected


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_TEXT, _JSON, max_size=8))
def test_fast_path_equals_rfc8785_reference(value: dict[str, Any]) -> None:
    """Whatever canonical_json picks, its bytes are rfc8785's, and it refuses what rfc8785 refuses."""
    _assert_same_as_reference(value)


_FAST_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1), _TEXT
)
_ASCII_KEYS = st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=8)
_FAST_JSON = st.recursive(
    _FAST_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(_ASCII_KEYS, children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_ASCII_KEYS, _FAST_JSON, max_size=8))
def test_fast_path_premise_orjson_sorted_equals_rfc8785(value: dict[str, Any]) -> None:
    """ASCII keys, no floats, safe integers: orjson with sorted keys is byte-identical to JCS."""
    expected = rfc8785.dumps(value)
    assert orjson.dumps(value, option=orjson.OPT_SORT_KEYS) == expected
    assert canonical_json(value) == expected


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(_TEXT, _JSON, max_size=6))
def test_a_canonical_fragment_is_copied_verbatim(payload: dict[str, Any]) -> None:
    """A payload handed over as its own JCS text (orjson.Fragment) canonicalizes like the payload."""
    try:
        payload_text = rfc8785.dumps(payload)
    except rfc8785.IntegerDomainError:
        payload_text = None
    if payload_text is not None:
        as_fragment = canonical_bytes({**EXAMPLE_1, "payload": orjson.Fragment(payload_text)}, 3)
        assert as_fragment == canonical_bytes({**EXAMPLE_1, "payload": payload}, 3)


def test_fragment_outside_the_fast_path_still_canonicalizes() -> None:
    """A float elsewhere sends the object to rfc8785, which cannot read fragments: round-trip instead."""
    payload = {"b": [1, "x"], "a": {"é": None}}
    fragment = orjson.Fragment(canonical_json(payload))
    value = {"ratio": 0.5, "payload": fragment}
    assert canonical_json(value) == rfc8785.dumps({"ratio": 0.5, "payload": payload})
    with pytest.raises(rfc8785.IntegerDomainError):
        canonical_json({"n": 2**60, "payload": fragment})


def test_a_non_canonical_fragment_changes_the_bytes() -> None:
    """Fragments are trusted to be canonical; a non-canonical one gives bytes the server never hashed."""
    honest = canonical_bytes({**EXAMPLE_1, "payload": {"b": 1, "a": 2}}, 1)
    reordered = canonical_bytes({**EXAMPLE_1, "payload": orjson.Fragment(b'{"b":1,"a":2}')}, 1)
    assert honest != reordered


def test_docs_worked_example_matches_the_code() -> None:
    """docs/integrity.md shows the exact canonical line and hashes pinned above."""
    doc = (Path(__file__).parents[2] / "docs" / "integrity.md").read_text(encoding="utf-8")
    assert "\n" + EXAMPLE_1_CANONICAL.decode() + "\n" in doc
    for value in (EXAMPLE_1_HASH, EXAMPLE_2_HASH, EXAMPLE_ROOT_2):
        assert value in doc


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_TEXT, _JSON, max_size=8), st.integers(min_value=1, max_value=2**53 - 1))
def test_canonical_parts_splice_seq_exactly(value: dict[str, Any], seq: int) -> None:
    """head + digits of seq + tail is canonical_bytes, for any object (including one with a "seq" key)."""
    from auditkeep.integrity.canonical import _safe_dict, canonical_parts

    try:
        expected = canonical_bytes(value, seq)
    except rfc8785.IntegerDomainError:
        return
    head, tail = canonical_parts(value)
    assert head + b"%d" % seq + tail == expected
    if _safe_dict(value):  # what `plain=True` promises
        head, tail = canonical_parts(value, plain=True)
        assert head + b"%d" % seq + tail == expected


def test_canonical_parts_of_the_worked_example() -> None:
    from auditkeep.integrity.canonical import canonical_parts

    head, tail = canonical_parts(EXAMPLE_1)
    assert head + b"1" + tail == EXAMPLE_1_CANONICAL
    assert canonical_parts({}) == (b'{"seq":', b"}")
    assert canonical_parts({"a": orjson.Fragment(b'"\x00"')}) == (b'{"a":"\x00","seq":', b"}")  # NUL in a fragment
    with pytest.raises(rfc8785.IntegerDomainError):  # refused like canonical_bytes, even when called plain
        canonical_parts({"big": 2**60, "z": 1}, plain=True)
