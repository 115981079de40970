"""Signed checkpoints: (organization, tree size, Merkle root, chain head, time) under an Ed25519 key.

A checkpoint signs `SIGNATURE_CONTEXT ‖ JCS(every field but "signature")` (docs/integrity.md,
"Checkpoints").
The context prefix keeps a checkpoint signature from ever being valid for some other message the same
key might sign later. `load_or_create_signing_key` is the one function in integrity/ that touches the
filesystem: the key lives in a file of its own, outside the database (settings.signing_key_path).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from auditkeep.integrity.canonical import canonical_json

SIGNATURE_CONTEXT = b"auditkeep checkpoint v1\n"
ALGORITHM = "Ed25519"
# What GET /api/v1/integrity/public_key answers with `export_public_key`'s bytes.
PUBLIC_KEY_MEDIA_TYPE = "application/json"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

Hex32 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{128}$")]
Timestamp = Annotated[
    str, StringConstraints(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$")
]


class Checkpoint(BaseModel):
    """A signed statement that `org`'s log had `tree_size` events with this root and chain head.

    Unknown members are ignored when parsing (they are not signed, so they carry no weight).
    """

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True, title="Checkpoint")

    org: str = Field(min_length=1, description="Organization name")
    tree_size: int = Field(ge=0, description="Events covered: seq 1..tree_size")
    root_hash: Hex32 = Field(description="RFC 9162 Merkle root over seq 1..tree_size, lowercase hex")
    chain_head: Hex32 = Field(description="hash of seq tree_size (64 zeros when tree_size is 0)")
    issued_at: Timestamp = Field(description="When it was signed, UTC, YYYY-MM-DDTHH:MM:SS.ffffffZ")
    key_id: Hex32 = Field(description="SHA-256 of the raw 32-byte Ed25519 public key, lowercase hex")
    signature: Hex64 = Field(description="Ed25519 signature of `checkpoint_message`, lowercase hex")


def checkpoint_message(checkpoint: Checkpoint) -> bytes:
    """The exact bytes a checkpoint's signature covers."""
    fields: dict[str, Any] = checkpoint.model_dump(exclude={"signature"})
    return SIGNATURE_CONTEXT + canonical_json(fields)


def public_key_id(public_key: Ed25519PublicKey) -> str:
    """key_id: lowercase hex SHA-256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def format_timestamp(moment: datetime) -> str:
    """A datetime as the API writes timestamps: UTC, microseconds, `Z` (naive means UTC)."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime(TIMESTAMP_FORMAT)


def sign_checkpoint(
    private_key: Ed25519PrivateKey,
    *,
    org: str,
    tree_size: int,
    root_hash: str,
    chain_head: str,
    issued_at: datetime | None = None,
) -> Checkpoint:
    """Sign a checkpoint for `org` at `tree_size` (hashes as lowercase hex); issued now unless given."""
    unsigned = Checkpoint(
        org=org,
        tree_size=tree_size,
        root_hash=root_hash,
        chain_head=chain_head,
        issued_at=format_timestamp(issued_at or datetime.now(UTC)),
        key_id=public_key_id(private_key.public_key()),
        signature="0" * 128,
    )
    signature = private_key.sign(checkpoint_message(unsigned))
    return unsigned.model_copy(update={"signature": signature.hex()})


def verify_checkpoint(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> bool:
    """True when `public_key` made this checkpoint's signature over exactly these field values."""
    if checkpoint.key_id != public_key_id(public_key):
        return False
    try:
        public_key.verify(bytes.fromhex(checkpoint.signature), checkpoint_message(checkpoint))
    except InvalidSignature:
        return False
    return True


def load_checkpoint(data: bytes | str) -> Checkpoint:
    """Parse a checkpoint as `auditkeep checkpoint` prints it; ValueError when it is not one."""
    return Checkpoint.model_validate_json(data)


def export_public_key(public_key: Ed25519PublicKey) -> bytes:
    """The public key document, byte for byte what GET /api/v1/integrity/public_key serves.

    `{"algorithm": "Ed25519", "key_id": ..., "public_key_pem": ...}`: the PEM for tools such as
    openssl, the key_id to match checkpoints against, and room for a later algorithm.
    """
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    document = {"algorithm": ALGORITHM, "key_id": public_key_id(public_key), "public_key_pem": pem.decode()}
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def load_public_key(data: bytes | str) -> Ed25519PublicKey:
    """Read a public key from `export_public_key`'s JSON document or from a bare PEM file.

    A document's `algorithm` must be Ed25519 and its `key_id`, when present, must match the key:
    a document that disagrees with itself is refused rather than half-trusted.
    """
    raw = data.encode() if isinstance(data, str) else data
    pem = raw.strip()
    if pem.startswith(b"{"):
        try:
            document = orjson.loads(pem)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"public key document is not valid JSON: {exc}") from None
        if not isinstance(document, dict) or not isinstance(document.get("public_key_pem"), str):
            raise ValueError('public key document needs a "public_key_pem" string')
        if document.get("algorithm", ALGORITHM) != ALGORITHM:
            raise ValueError(f"unsupported public key algorithm {document['algorithm']!r}")
        public_key = _load_pem_public_key(document["public_key_pem"].encode())
        if "key_id" in document and document["key_id"] != public_key_id(public_key):
            raise ValueError("public key document's key_id does not match its key")
        return public_key
    return _load_pem_public_key(pem)


def _load_pem_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ValueError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"public key is {type(key).__name__}, not Ed25519")
    return key


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """An unencrypted PKCS#8 PEM Ed25519 private key; ValueError for anything else."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"signing key is {type(key).__name__}, not Ed25519")
    return key


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key at `path` (PKCS#8 PEM), generated there with mode 0600 on first use.

    Creation is atomic: the key is written to a private temporary file and hard-linked into place,
    and `link` fails if the name exists, so when several workers start at once exactly one key wins
    and every process ends up signing with it (a loser never reads a half-written file).
    """
    try:
        return load_private_key(path.read_bytes())
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    _write_exclusive(temporary, pem)
    try:
        os.link(temporary, path)
    except FileExistsError:
        return load_private_key(path.read_bytes())
    except OSError:
        # A filesystem without hard links: create the name itself exclusively instead.
        try:
            _write_exclusive(path, pem)
        except FileExistsError:
            return load_private_key(path.read_bytes())
    finally:
        temporary.unlink(missing_ok=True)
    return key


def _write_exclusive(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create `path` holding `data`, fsync'd. O_EXCL: never follow or overwrite something already there;
    0600 by default: a key is a secret (integrity/keyring.py writes its public key ring 0644)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
