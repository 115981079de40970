"""Canonical bytes of an event: RFC 8785 (JCS) of its 17 API fields plus "seq" (docs/integrity.md).

The `rfc8785` library is the reference implementation. It costs about 54 µs an event here, which alone
would cap ingest near 18,000 events/s, so the common case takes a fast path: orjson with sorted keys
emits byte-identical output when every key is ASCII (so code-point order equals JCS's UTF-16 order),
no number is a float (JCS formats floats the ECMAScript way) and every integer is within I-JSON's
±(2**53 - 1). Anything else goes through `rfc8785`. tests/integrity/test_canonical.py checks the two
paths agree on arbitrary input.

A value may also be an `orjson.Fragment` holding JSON text that is *already* canonical (a payload
stored in its JCS form): it is copied verbatim instead of being serialized again. Verification makes a
fragment of a stored payload only after `is_canonical` has checked its text; any other text is hashed as
the value it holds, as a client recomputing from the API's answer would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
import rfc8785
from orjson import Fragment

from auditkeep.schemas.audit_logs import LOG_FIELDS

MAX_SAFE_INTEGER = 2**53 - 1


def _safe_dict(value: dict[Any, Any]) -> bool:
    # Exact type checks in plain loops: ~3 µs an event where isinstance() chains and all() over
    # generators took ~7 µs, and this check runs for every event ingested or verified.
    for key, item in value.items():
        if type(key) is not str or not key.isascii():
            return False
        kind = type(item)
        if kind is str or kind is bool or item is None or kind is Fragment:
            continue
        if kind is int:
            if -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                continue
            return False
        if not (kind is dict and _safe_dict(item)) and not (kind is list and _safe_list(item)):
            return False  # floats, subclasses and anything else: let the reference implementation decide
    return True


def _safe_list(value: list[Any]) -> bool:
    for item in value:
        kind = type(item)
        if kind is str or kind is bool or item is None or kind is Fragment:
            continue
        if kind is int:
            if -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                continue
            return False
        if not (kind is dict and _safe_dict(item)) and not (kind is list and _safe_list(item)):
            return False
    return True


def _contains_fragment(value: Any) -> bool:
    if type(value) is Fragment:
        return True
    if isinstance(value, dict):
        return any(_contains_fragment(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_contains_fragment(item) for item in value)
    return False


def canonical_json(value: Mapping[str, Any], *, plain: bool = False) -> bytes:
    """JCS (RFC 8785) serialization of a JSON object made of plain Python values (and fragments).

    `plain=True` is the caller's promise that the fast path's conditions hold (every key ASCII, no float,
    every int within ±(2**53 - 1)), so they are not checked again: ingest's payload validation walks the
    payload anyway and establishes them (ingest/validation.py).
    """
    if plain and type(value) is dict:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    if type(value) is dict and _safe_dict(value):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        if not _contains_fragment(value):
            raise
    # A fragment's text is reachable only through orjson: round-trip the value (exact for every JSON
    # value orjson can write) and canonicalize the result.
    return rfc8785.dumps(orjson.loads(orjson.dumps(value)))


def is_canonical(text: str) -> bool:
    """Whether `text` is JSON exactly in its canonical (JCS) form.

    A stored payload may be hashed verbatim, as a fragment, only if it is: the API returns the value the
    text holds, and the event's canonical bytes are that value's JCS form. Ingest stores payloads
    canonical; a text that is not was written behind the service's back, and verification must then
    hash the value, as any client recomputing from the API's answer would (~1.5 µs a small payload).
    """
    try:
        value = orjson.loads(text)
        return (canonical_json(value) if type(value) is dict else rfc8785.dumps(value)) == text.encode()
    except (orjson.JSONDecodeError, rfc8785.CanonicalizationError, TypeError, ValueError, UnicodeEncodeError):
        return False


def canonical_bytes(log: Mapping[str, Any], seq: int) -> bytes:
    """Canonical bytes of one event: its 17 API fields (as the API returns them) plus `seq`."""
    return canonical_json({**log, "seq": seq})



# Stands for seq's digits while the rest is serialized: orjson copies a fragment verbatim, and a raw NUL byte
# occurs nowhere else in its output (it escapes control characters in strings).
_SEQ_MARK = Fragment(b"\x00")


def canonical_parts(log: Mapping[str, Any], *, plain: bool = False) -> tuple[bytes, bytes]:
    """`canonical_bytes(log, seq)` cut where the digits of seq go: it equals `head + b"%d" % seq + tail`.

    Ingest serializes each event before it takes the organization's head lock, where seq becomes known,
    so the lock is held for the SHA-256 only (issue #3's chaining cost, docs/benchmarks.md). A JCS
    integer below 2**53 is its plain decimal digits. `plain` is canonical_json's promise (no float,
    ASCII keys); integers beyond ±(2**53 - 1) are refused by orjson here and take the general path.
    """
    if plain or (type(log) is dict and _safe_dict(log)):
        try:
            out = orjson.dumps({**log, "seq": _SEQ_MARK}, option=orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER)
        except orjson.JSONEncodeError:
            pass
        else:
            head, mark, tail = out.partition(b"\x00")
            if mark and b"\x00" not in tail:  # a fragment in `log` could hold a NUL byte
                return head, tail
    # General path: the members sorting before "seq" and those after it, as two objects spliced around it.
    # "seq" is ASCII, so Python's code-point `<` agrees with JCS's UTF-16 order against it.
    before = canonical_json({k: v for k, v in log.items() if k < "seq"})
    after = canonical_json({k: v for k, v in log.items() if k > "seq"})
    return (before[:-1] + b',"seq":' if len(before) > 2 else b'{"seq":'), (
        b"," + after[1:] if len(after) > 2 else b"}"
    )


# Canonical form version 2 (docs/integrity.md §1.2, issue #12): the personal fields enter the hash through
# one salted commitment, so they can be erased while every hash still recomputes.
PERSONAL_FIELDS = ("client_ip", "log_entry", "payload", "referer", "url", "user_agent", "user_email", "user_id")
# What an erased event shows: the contract requires strings for client_ip and url; the rest are null.
ERASED_MARK = "[erased]"
ERASED_VALUES: dict[str, Any] = dict.fromkeys(PERSONAL_FIELDS) | {"client_ip": ERASED_MARK, "url": ERASED_MARK}
SALT_BYTES = 16
_SALT_HEX = 2 * SALT_BYTES
_HEX = frozenset("0123456789abcdef")


def personal_commitment(salt: bytes, log: Mapping[str, Any], *, plain: bool = False) -> bytes:
    """SHA-256(salt ‖ JCS of the 8 personal fields): what a v2 event's canonical form holds instead of them."""
    return hashlib.sha256(salt + canonical_json({name: log[name] for name in PERSONAL_FIELDS}, plain=plain)).digest()


def core_fields(log: Mapping[str, Any], commitment_hex: str) -> dict[str, Any]:
    """The members of a v2 canonical form other than seq: the 9 other fields, `personal` and `v`."""
    core = {name: value for name, value in log.items() if name not in _PERSONAL_SET}
    core["personal"] = commitment_hex
    core["v"] = 2
    return core


_PERSONAL_SET = frozenset(PERSONAL_FIELDS)


def is_erased_view(log: Mapping[str, Any]) -> bool:
    """Whether the personal fields show exactly what an erased event shows."""
    return all(log[name] == value and type(log[name]) is type(value) for name, value in ERASED_VALUES.items())


def commitment_of(log: Mapping[str, Any]) -> str | None:
    """The personal commitment (hex) a v2 event's canonical form holds, or None for a version 1 event.

    `log` carries `personal_salt` (32 hex digits, the values are present) or `personal_commitment` (64 hex
    digits, the event was erased and shows ERASED_VALUES); neither (or both null) is version 1. ValueError
    when they are malformed, when both are given, or when an erased event shows anything but the marks.
    """
    salt, commitment = log.get("personal_salt"), log.get("personal_commitment")
    if commitment is not None:
        if salt is not None:
            raise ValueError("an event has personal_salt or personal_commitment, not both")
        if type(commitment) is not str or len(commitment) != 64 or not _HEX.issuperset(commitment):
            raise ValueError("personal_commitment must be 64 lowercase hex digits")
        if not is_erased_view(log):
            raise ValueError("an erased event shows personal values")
        return commitment
    if salt is None:
        return None
    if type(salt) is not str or len(salt) != _SALT_HEX or not _HEX.issuperset(salt):
        raise ValueError(f"personal_salt must be {_SALT_HEX} lowercase hex digits")
    return personal_commitment(bytes.fromhex(salt), log).hex()


# The 9 API fields that are not personal: what a version 2 canonical form holds beside `personal` and `v`.
_CORE_NAMES = tuple(name for name in LOG_FIELDS if name not in _PERSONAL_SET)


def v2_parts(log: Mapping[str, Any], salt: bytes) -> tuple[str, bytes, bytes]:
    """Ingest's version 2 path: (the personal commitment in hex, head, tail), where head and tail are
    `canonical_parts(core_fields(log, commitment))`, for a `log` that meets canonical_json's `plain` promise.

    One dict and one serialization for each part, instead of the reference's copies (core_fields, then
    canonical_parts' {**log, "seq": ...}). Anything the fast path declines (an integer beyond I-JSON's
    range) takes the reference path.
    """
    personal = {name: log[name] for name in PERSONAL_FIELDS}
    try:
        # Sorted keys still: a self-audit event's payload is a dict, not a canonical fragment.
        text = orjson.dumps(personal, option=orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER)
        digest = hashlib.sha256(salt)
        digest.update(text)
        commitment = digest.hexdigest()
        core = {name: log[name] for name in _CORE_NAMES}
        core["personal"], core["seq"], core["v"] = commitment, _SEQ_MARK, 2
        out = orjson.dumps(core, option=orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER)
    except orjson.JSONEncodeError:
        commitment = personal_commitment(salt, log).hex()
        head, tail = canonical_parts(core_fields(log, commitment))
        return commitment, head, tail
    # The core fields hold no fragment (the payload is personal), so the only raw NUL is the mark.
    head, _, tail = out.partition(b"\x00")
    return commitment, head, tail

