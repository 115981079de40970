"""The signing key ring: the current checkpoint key plus retired public keys, kept for verification only.

Every checkpoint names the key that signed it (`key_id`), so rotating the key must not forget the old
public key: checkpoints customers saved years ago still have to verify. `rotate_signing_key` moves the
current key's *public* half into a retired list beside the key file (`<key stem>.retired.json`) and puts
a fresh private key in its place; the old private key is not kept, so a leaked one signs nothing new
that this server would accept as current. Verification picks the key by the checkpoint's `key_id`.

Cursors of recorded walks carry an HMAC keyed from the signing key (ingest/read_rules.py,
`cursor_secret`). So that a rotation does not make the walks in progress fail (422), the retired key's
cursor secret, a one-way digest of it and never the key, is kept too, in `<key stem>.retired-cursors.json`
(0600: it is secret, unlike the public ring, 0644).

The published document extends the single-key one (docs/integrity.md §5) with a `retired` list, present
only once a key has been retired, so a verifier that reads only the top-level key keeps working.
Like `load_or_create_signing_key`, this module touches the filesystem: the ring lives beside the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auditkeep.integrity.checkpoints import (
    ALGORITHM,
    Checkpoint,
    _write_exclusive,
    format_timestamp,
    load_private_key,
    load_public_key,
    public_key_id,
    verify_checkpoint,
)


@dataclass(frozen=True, slots=True)
class RetiredKey:
    """A public key that signed checkpoints once and now only verifies them."""

    public_key: Ed25519PublicKey
    retired_at: str  # YYYY-MM-DDTHH:MM:SS.ffffffZ

    @property
    def key_id(self) -> str:
        return public_key_id(self.public_key)


def retired_keys_path(signing_key_path: Path) -> Path:
    """Where the retired public keys of the key at `signing_key_path` are kept: `<stem>.retired.json`."""
    return signing_key_path.with_name(f"{signing_key_path.stem}.retired.json")


def retired_cursor_secrets_path(signing_key_path: Path) -> Path:
    """Where retired keys' cursor secrets are kept (0600): `<stem>.retired-cursors.json`."""
    return signing_key_path.with_name(f"{signing_key_path.stem}.retired-cursors.json")


def cursor_secret(key: Ed25519PrivateKey) -> bytes:
    """What the HMAC keys of cursors (ingest/read_rules.py) derive from: a digest of the signing key, which
    every node of a deployment shares already. One-way, so keeping a retired key's never keeps the key."""
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    return hmac.new(raw, b"auditkeep cursor hmac v2", hashlib.sha256).digest()


def read_retired_cursor_secrets(path: Path) -> list[bytes]:
    """Retired keys' cursor secrets stored at `path` (`retired_cursor_secrets_path`), newest first; none
    when the file does not exist."""
    return [bytes.fromhex(entry["cursor_secret"]) for entry in _cursor_entries(path)]


def _cursor_entries(path: Path) -> list[dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    try:
        entries = orjson.loads(raw)["retired"]
        for entry in entries:
            bytes.fromhex(entry["cursor_secret"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a list of retired cursor secrets: {exc!r}") from None
    return list(entries)


def _key_entry(public_key: Ed25519PublicKey) -> dict[str, Any]:
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"algorithm": ALGORITHM, "key_id": public_key_id(public_key), "public_key_pem": pem.decode()}


def export_key_ring(current: Ed25519PublicKey, retired: list[RetiredKey]) -> bytes:
    """The public key document GET /api/v1/integrity/public_key serves.

    Without retired keys it is byte for byte `export_public_key(current)`; with them, a `retired` list of
    `{"algorithm", "key_id", "public_key_pem", "retired_at"}` follows, oldest first.
    """
    document = _key_entry(current)
    if retired:
        document["retired"] = [{**_key_entry(r.public_key), "retired_at": r.retired_at} for r in retired]
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def load_public_keys(data: bytes | str) -> dict[str, Ed25519PublicKey]:
    """Every key a public key document holds, by key_id, the current one first.

    Takes what `export_key_ring` writes, the single-key document or a bare PEM (`load_public_key`'s
    forms). A retired entry is checked like the top-level key: Ed25519, and its key_id must match.
    """
    current = load_public_key(data)
    keys = {public_key_id(current): current}
    raw = data.encode() if isinstance(data, str) else data
    if raw.strip().startswith(b"{"):
        for index, entry in enumerate(_retired_entries(orjson.loads(raw))):
            try:
                key = load_public_key(orjson.dumps(entry))
            except ValueError as exc:
                raise ValueError(f"retired key {index}: {exc}") from None
            keys.setdefault(public_key_id(key), key)
    return keys


def _retired_entries(document: Any) -> list[Any]:
    entries = document.get("retired", []) if isinstance(document, dict) else []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError('"retired" must be a list of public key documents')
    return entries


def verify_with_ring(checkpoint: Checkpoint, keys: Mapping[str, Ed25519PublicKey]) -> bool:
    """True when the key the checkpoint names is in `keys` and made its signature."""
    key = keys.get(checkpoint.key_id)
    return key is not None and verify_checkpoint(checkpoint, key)


def read_retired_keys(path: Path) -> list[RetiredKey]:
    """The retired keys stored at `path` (`retired_keys_path`); none when the file does not exist."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    try:
        entries = _retired_entries(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    found: list[RetiredKey] = []
    for index, entry in enumerate(entries):
        try:
            key = load_public_key(orjson.dumps(entry))
        except ValueError as exc:
            raise ValueError(f"{path}: retired key {index}: {exc}") from None
        found.append(RetiredKey(key, str(entry.get("retired_at", ""))))
    return found


def rotate_signing_key(path: Path, *, now: datetime | None = None) -> tuple[str, str]:
    """Retire the key at `path` (its public half joins the ring) and put a new one there: (old id, new id).

    The ring is written before the key is replaced, so a crash between the two leaves the current key
    listed as retired too (harmless: it is still current) and never a checkpoint key that nothing knows.
    Processes that cached the old key keep signing with it until they notice the file changed; their
    checkpoints verify through the ring. FileNotFoundError when there is no key to rotate.
    """
    old_private = load_private_key(path.read_bytes())
    old = old_private.public_key()
    # Cursors signed under the old key keep verifying (read_rules.cursor_keys): its cursor secret is
    # kept, before the key is replaced, like its public half below.
    cursors_path = retired_cursor_secrets_path(path)
    secret = cursor_secret(old_private).hex()
    secrets_kept = [{"key_id": public_key_id(old), "cursor_secret": secret,
                     "retired_at": format_timestamp(now or datetime.now(UTC))}]
    secrets_kept += [e for e in _cursor_entries(cursors_path) if e["cursor_secret"] != secret]
    _replace(cursors_path, orjson.dumps({"retired": secrets_kept}, option=orjson.OPT_INDENT_2) + b"\n", mode=0o600)
    ring_path = retired_keys_path(path)
    retired = [r for r in read_retired_keys(ring_path) if r.key_id != public_key_id(old)]
    retired.append(RetiredKey(old, format_timestamp(now or datetime.now(UTC))))
    document = {"retired": [{**_key_entry(r.public_key), "retired_at": r.retired_at} for r in retired]}
    _replace(ring_path, orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n", mode=0o644)
    new = Ed25519PrivateKey.generate()
    pem = new.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _replace(path, pem, mode=0o600)
    return public_key_id(old), public_key_id(new.public_key())


def _replace(path: Path, data: bytes, *, mode: int) -> None:
    """Write `data` to `path` atomically: a fsync'd private temporary file renamed over it, then the folder
    fsync'd, so a reader sees the old file or the new one, never a half-written key."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    _write_exclusive(temporary, data, mode)
    try:
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
