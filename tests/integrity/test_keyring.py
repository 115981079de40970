"""The signing key ring: its published document, reading it back, and rotation on disk."""

from __future__ import annotations

import stat
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditkeep.integrity.checkpoints import (
    export_public_key,
    load_or_create_signing_key,
    load_private_key,
    public_key_id,
)
from auditkeep.integrity.keyring import (
    RetiredKey,
    export_key_ring,
    load_public_keys,
    read_retired_keys,
    retired_keys_path,
    rotate_signing_key,
)


def test_without_retired_keys_the_document_is_the_single_key_one() -> None:
    key = Ed25519PrivateKey.generate().public_key()
    assert export_key_ring(key, []) == export_public_key(key)


def test_ring_document_loads_current_first_then_retired() -> None:
    current, old = Ed25519PrivateKey.generate().public_key(), Ed25519PrivateKey.generate().public_key()
    keys = load_public_keys(export_key_ring(current, [RetiredKey(old, "2026-01-01T00:00:00.000000Z")]))
    assert list(keys) == [public_key_id(current), public_key_id(old)]


def test_a_retired_entry_whose_key_id_lies_is_refused() -> None:
    current, old = Ed25519PrivateKey.generate().public_key(), Ed25519PrivateKey.generate().public_key()
    document = orjson.loads(export_key_ring(current, [RetiredKey(old, "2026-01-01T00:00:00.000000Z")]))
    document["retired"][0]["key_id"] = "0" * 64
    with pytest.raises(ValueError, match="retired key 0: public key document's key_id does not match its key"):
        load_public_keys(orjson.dumps(document))


def test_rotation_retires_the_public_half_and_replaces_the_private_key(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    first = public_key_id(load_or_create_signing_key(path).public_key())
    old_id, new_id = rotate_signing_key(path)
    assert old_id == first and new_id == public_key_id(load_private_key(path.read_bytes()).public_key())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert retired_keys_path(path) == tmp_path / "signing-key.retired.json"
    assert [r.key_id for r in read_retired_keys(retired_keys_path(path))] == [first]
    assert b"PRIVATE" not in retired_keys_path(path).read_bytes()
    _, third = rotate_signing_key(path)
    assert [r.key_id for r in read_retired_keys(retired_keys_path(path))] == [first, new_id]
    # The retired key's cursor secret is kept apart from the public ring (read_rules.cursor_keys).
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "signing-key.pem", "signing-key.retired-cursors.json", "signing-key.retired.json"]
    assert third != new_id
