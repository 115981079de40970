"""Signed checkpoints: message format, Ed25519 sign/verify, key files and the public key document."""

from __future__ import annotations

import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from auditkeep.integrity import checkpoints
from auditkeep.integrity.checkpoints import Checkpoint, sign_checkpoint, verify_checkpoint

from ._events import fixed_key

# The fixed key's public half and key_id, and the example checkpoint of docs/integrity.md.
FIXED_PUBLIC_RAW = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
FIXED_KEY_ID = "56475aa75463474c0285df5dbf2bcab73da651358839e9b77481b2eab107708c"
ROOT_2 = "e1996282ffebcd53c9d359397d8d455fe8db1a395705d8bbf7d6f8aa9030926d"
HEAD_2 = "731a62e1d4a2142739c7df9704414f0ce039171aebce86065916a32087590ebf"
EXAMPLE_MESSAGE = (
    b"auditkeep checkpoint v1\n"
    b'{"chain_head":"731a62e1d4a2142739c7df9704414f0ce039171aebce86065916a32087590ebf",'
    b'"issued_at":"2024-05-01T12:40:00.000000Z",'
    b'"key_id":"56475aa75463474c0285df5dbf2bcab73da651358839e9b77481b2eab107708c",'
    b'"org":"acme",'
    b'"root_hash":"e1996282ffebcd53c9d359397d8d455fe8db1a395705d8bbf7d6f8aa9030926d",'
    b'"tree_size":2}'
)
EXAMPLE_SIGNATURE = (
    "f11e13c72789b2f39859379bbe1eabdf5bdf6270408c42abf40bdf8e1dc3c6a7"
    "d1a0673d6038573fcdf2ebea074772d68a70b83a52d3e63d4077da5701864804"
)


def example_checkpoint() -> Checkpoint:
    return sign_checkpoint(
        fixed_key(), org="acme", tree_size=2, root_hash=ROOT_2, chain_head=HEAD_2,
        issued_at=datetime(2024, 5, 1, 12, 40, tzinfo=UTC),
    )


def test_key_id_is_sha256_of_the_raw_public_key() -> None:
    public = fixed_key().public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw.hex() == FIXED_PUBLIC_RAW
    assert checkpoints.public_key_id(public) == FIXED_KEY_ID


def test_example_checkpoint_message_and_signature_are_pinned() -> None:
    """Ed25519 is deterministic, so the documented example signature is reproducible."""
    checkpoint = example_checkpoint()
    assert checkpoint.key_id == FIXED_KEY_ID
    assert checkpoints.checkpoint_message(checkpoint) == EXAMPLE_MESSAGE
    assert checkpoint.signature == EXAMPLE_SIGNATURE
    assert verify_checkpoint(checkpoint, fixed_key().public_key())


def test_checkpoint_json_round_trips() -> None:
    checkpoint = example_checkpoint()
    text = checkpoint.model_dump_json()
    assert list(orjson.loads(text)) == [
        "org", "tree_size", "root_hash", "chain_head", "issued_at", "key_id", "signature"
    ]
    assert checkpoints.load_checkpoint(text) == checkpoint
    assert checkpoints.load_checkpoint(text.encode()) == checkpoint


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("org", "acme2"),
        ("tree_size", 3),
        ("root_hash", "0" * 64),
        ("chain_head", "f" * 64),
        ("issued_at", "2024-05-01T12:40:00.000001Z"),
        ("signature", "0" * 128),
    ],
)
def test_any_changed_field_breaks_the_signature(field: str, value: object) -> None:
    tampered = example_checkpoint().model_copy(update={field: value})
    assert not verify_checkpoint(tampered, fixed_key().public_key())


def test_another_key_does_not_verify() -> None:
    other = Ed25519PrivateKey.generate()
    assert not verify_checkpoint(example_checkpoint(), other.public_key())
    # Even with key_id rewritten to the other key's, the signature is not the other key's.
    relabelled = example_checkpoint().model_copy(
        update={"key_id": checkpoints.public_key_id(other.public_key())}
    )
    assert not verify_checkpoint(relabelled, other.public_key())


def test_naive_issued_at_means_utc() -> None:
    checkpoint = sign_checkpoint(
        fixed_key(), org="o", tree_size=0, root_hash="e3" * 32, chain_head="0" * 64,
        issued_at=datetime(2024, 1, 2, 3, 4, 5, 6),
    )
    assert checkpoint.issued_at == "2024-01-02T03:04:05.000006Z"


@pytest.mark.parametrize(
    "patch",
    [
        {"root_hash": "E" * 64},
        {"chain_head": "0" * 63},
        {"tree_size": -1},
        {"tree_size": "2"},
        {"issued_at": "2024-05-01T12:40:00Z"},
        {"signature": "ab"},
        {"org": ""},
    ],
)
def test_malformed_checkpoints_are_refused(patch: dict[str, object]) -> None:
    document = {**orjson.loads(example_checkpoint().model_dump_json()), **patch}
    with pytest.raises(ValidationError):
        checkpoints.load_checkpoint(orjson.dumps(document))


def test_public_key_document_loads_as_is_and_as_bare_pem() -> None:
    public = fixed_key().public_key()
    document = checkpoints.export_public_key(public)
    parsed = orjson.loads(document)
    assert parsed["algorithm"] == "Ed25519"
    assert parsed["key_id"] == FIXED_KEY_ID
    assert parsed["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----\n")
    for form in (document, document.decode(), parsed["public_key_pem"], parsed["public_key_pem"].encode()):
        loaded = checkpoints.load_public_key(form)
        assert checkpoints.public_key_id(loaded) == FIXED_KEY_ID


@pytest.mark.parametrize(
    "document",
    [
        b'{"algorithm": "Ed25519"}',
        b'{"algorithm": "RSA", "public_key_pem": "x"}',
        b"{not json",
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        b"",
    ],
)
def test_unusable_public_key_documents_are_refused(document: bytes) -> None:
    with pytest.raises(ValueError):
        checkpoints.load_public_key(document)


def test_public_key_document_with_a_wrong_key_id_is_refused() -> None:
    parsed = orjson.loads(checkpoints.export_public_key(fixed_key().public_key()))
    parsed["key_id"] = "0" * 64
    with pytest.raises(ValueError, match="key_id"):
        checkpoints.load_public_key(orjson.dumps(parsed))


def test_non_ed25519_public_key_is_refused() -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValueError, match="not Ed25519"):
        checkpoints.load_public_key(pem)


def test_signing_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "deeper" / "keys" / "signing-key.pem"
    key = checkpoints.load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    again = checkpoints.load_or_create_signing_key(path)
    assert checkpoints.public_key_id(again.public_key()) == checkpoints.public_key_id(key.public_key())
    assert [p.name for p in path.parent.iterdir()] == ["signing-key.pem"]  # no temporary file left


def test_concurrent_first_use_yields_one_key(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    barrier = threading.Barrier(8)

    def create() -> str:
        barrier.wait()
        return checkpoints.public_key_id(checkpoints.load_or_create_signing_key(path).public_key())

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(lambda _: create(), range(8)))
    assert len(set(ids)) == 1
    assert ids[0] == checkpoints.public_key_id(checkpoints.load_private_key(path.read_bytes()).public_key())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signing-key.pem"]


def test_existing_key_of_another_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    with pytest.raises(ValueError, match="not Ed25519"):
        checkpoints.load_or_create_signing_key(path)


def test_key_file_is_not_world_readable_even_with_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        path = tmp_path / "k.pem"
        checkpoints.load_or_create_signing_key(path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_docs_checkpoint_example_matches_the_code() -> None:
    """docs/integrity.md shows this exact checkpoint, key id and public key document."""
    doc = (Path(__file__).parents[2] / "docs" / "integrity.md").read_text(encoding="utf-8")
    for value in (EXAMPLE_SIGNATURE, FIXED_KEY_ID, FIXED_PUBLIC_RAW, '"issued_at": "2024-05-01T12:40:00.000000Z"'):
        assert value in doc
    pem = orjson.loads(checkpoints.export_public_key(fixed_key().public_key()))["public_key_pem"]
    assert orjson.dumps(pem).decode() in doc
