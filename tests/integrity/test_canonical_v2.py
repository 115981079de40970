"""Canonical form version 2: personal fields through a salted commitment (docs/integrity.md §1.2, issue #12)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import rfc8785

from auditkeep.integrity.canonical import ERASED_VALUES, PERSONAL_FIELDS, personal_commitment, v2_parts
from auditkeep.integrity.chain import ZERO_HASH
from auditkeep.integrity.verify import BreakKind, event_hash, verify_chain
from tests.integrity.test_canonical import EXAMPLE_1, EXAMPLE_2

SALT = bytes(range(16))
# Pinned in docs/integrity.md §1.2 (the §1 example event, salt 00 01 … 0f).
COMMITMENT = "ee8e99a7cb2a87a11d476ca5b9fcb18730be5a8e8ff01c7fac54c5d25f125db6"
CANONICAL = (
    '{"action":"document.update","event_uuid":"7f6c3a2e-1b4d-4e8f-9a0b-5c6d7e8f9a0b","is_support_user":false,'
    '"object_id":42,"object_type":"document","personal":"' + COMMITMENT + '","request_type":"PATCH","seq":1,'
    '"source":"web","status":"success","timestamp":"2024-05-01T12:34:56.789012Z","v":2}'
).encode()
HASH_1 = "d3b07ce97308cd183efafe4d4886ea90f0c0c8c95dab82f7bed96658fb891a6c"


def _v2(log: dict[str, Any], seq: int, prev: bytes, salt: bytes = SALT) -> dict[str, Any]:
    """An event chained in version 2, computed independently of src/ (rfc8785 + hashlib)."""
    commitment = hashlib.sha256(salt + rfc8785.dumps({k: log[k] for k in PERSONAL_FIELDS})).hexdigest()
    core = {k: v for k, v in log.items() if k not in PERSONAL_FIELDS} | {"personal": commitment, "v": 2, "seq": seq}
    digest = hashlib.sha256(prev + rfc8785.dumps(core)).hexdigest()
    return {**log, "seq": seq, "prev_hash": prev.hex(), "hash": digest, "personal_salt": salt.hex(),
            "personal_commitment": None}


def _v1(log: dict[str, Any], seq: int, prev: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(prev + rfc8785.dumps({**log, "seq": seq})).hexdigest()
    return {**log, "seq": seq, "prev_hash": prev.hex(), "hash": digest}


def _erase(event: dict[str, Any]) -> dict[str, Any]:
    """What the server keeps of an erased event: the commitment instead of the salt and the values."""
    commitment = personal_commitment(bytes.fromhex(event["personal_salt"]), event).hex()
    return {**event, **ERASED_VALUES, "personal_salt": None, "personal_commitment": commitment}


def test_pinned_example_commitment_canonical_bytes_and_hash() -> None:
    """The §1.2 worked example: commitment, canonical bytes and chain hash, byte for byte."""
    assert personal_commitment(SALT, EXAMPLE_1).hex() == COMMITMENT
    event = _v2(EXAMPLE_1, 1, ZERO_HASH)
    assert hashlib.sha256(ZERO_HASH + CANONICAL).hexdigest() == HASH_1 == event["hash"]
    assert event_hash(event, ZERO_HASH).hex() == HASH_1


def test_an_erased_event_keeps_its_hash_and_the_chain_verifies() -> None:
    """Erasing every event's values keeps hashes, chain and Merkle root; v1 and v2 events mix in one chain."""
    first = _v1(EXAMPLE_1, 1, ZERO_HASH)
    second = _v2(EXAMPLE_2, 2, bytes.fromhex(first["hash"]))
    third = _v2({**EXAMPLE_2, "event_uuid": "11111111-2222-4333-8444-555555555555"}, 3,
                bytes.fromhex(second["hash"]), salt=bytes(16))
    before = verify_chain([first, second, third])
    after = verify_chain([first, _erase(second), _erase(third)])
    assert before.ok and after.ok and after.events == 3
    assert after.head == before.head


@pytest.mark.parametrize("field", PERSONAL_FIELDS)
def test_an_edited_personal_field_breaks_the_hash(field: str) -> None:
    """Every personal field is bound by the commitment: changing one is a hash mismatch."""
    event = _v2(EXAMPLE_1, 1, ZERO_HASH)
    edited = {**event, field: "203.0.113.99" if field in ("client_ip", "url") else None}
    if event[field] is None:
        edited[field] = "x"
    report = verify_chain([edited])
    assert report.broken is not None and report.broken.kind is BreakKind.HASH_MISMATCH


def test_an_edited_salt_or_commitment_breaks_the_hash() -> None:
    """The salt and an erased event's commitment are bound too."""
    event = _v2(EXAMPLE_1, 1, ZERO_HASH)
    salted = {**event, "personal_salt": "ff" * 16}
    erased = _erase(event)
    recommitted = {**erased, "personal_commitment": "0" * 64}
    for bad in (salted, recommitted):
        report = verify_chain([bad])
        assert report.broken is not None and report.broken.kind is BreakKind.HASH_MISMATCH


def test_an_erased_event_that_shows_values_is_malformed() -> None:
    """An erased event must show exactly "[erased]" and nulls: a value beside a commitment is refused."""
    erased = _erase(_v2(EXAMPLE_1, 1, ZERO_HASH))
    for shown in ({"user_email": "alice@example.com"}, {"client_ip": "203.0.113.7"}, {"url": None}):
        report = verify_chain([{**erased, **shown}])
        assert report.broken is not None and report.broken.kind is BreakKind.MALFORMED
        assert "erased event shows personal values" in report.broken.reason


def test_a_version_2_event_stripped_to_version_1_fails() -> None:
    """Dropping the salt makes the event read as version 1, whose canonical bytes differ: a mismatch."""
    event = _v2(EXAMPLE_1, 1, ZERO_HASH)
    report = verify_chain([{**event, "personal_salt": None}])
    assert report.broken is not None and report.broken.kind is BreakKind.HASH_MISMATCH


@pytest.mark.parametrize("salt", ["00" * 15, "0G" * 16, "AB" * 16, 12])
def test_a_malformed_salt_is_malformed(salt: object) -> None:
    """A salt that is not 32 lowercase hex digits names the problem."""
    report = verify_chain([{**_v2(EXAMPLE_1, 1, ZERO_HASH), "personal_salt": salt}])
    assert report.broken is not None and report.broken.kind is BreakKind.MALFORMED
    assert "personal_salt" in report.broken.reason


@pytest.mark.parametrize("log", [
    EXAMPLE_1,
    EXAMPLE_2,
    {**EXAMPLE_1, "payload": {"z": [1, "é", None], "a": {"b": True}}, "user_email": "Zoë@x.test", "user_id": -7},
    {**EXAMPLE_1, "log_entry": "naïve \u2028 \"quoted\"", "object_id": 2**53 - 1, "url": None},
])
def test_ingests_fast_path_gives_the_reference_bytes(log: dict[str, Any]) -> None:
    """v2_parts (ingest's one-pass path) yields the commitment and the canonical bytes the independent
    computation does, around seq."""
    commitment, head, tail = v2_parts(log, SALT)
    expected = hashlib.sha256(SALT + rfc8785.dumps({k: log[k] for k in PERSONAL_FIELDS})).hexdigest()
    assert commitment == expected
    core = {k: v for k, v in log.items() if k not in PERSONAL_FIELDS} | {"personal": expected, "v": 2, "seq": 123}
    assert head + b"123" + tail == rfc8785.dumps(core)
