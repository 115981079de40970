"""Sealing a stream's secrets before they are stored (issue #10).

Destinations need their credentials in the clear to sign or authenticate, so a digest (as for API keys)
cannot serve. They are sealed with AES-256-GCM under a key kept in a file outside the database
(settings.secrets_key_path, made on first use with mode 0600), and bound to the stream's id as associated
data, so sealed secrets copied onto another stream do not open.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from auditkeep.errors import SecretsKeyError

__all__ = ["SecretsKeyError", "load_key", "seal", "unseal"]

_NONCE = 12


def load_key(path: Path) -> bytes:
    """The 32-byte key at `path`, made (mode 0600) when the file does not exist yet."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = AESGCM.generate_key(bit_length=256)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64encode(key) + b"\n")
        return key
    key = base64.b64decode(raw.strip())
    if len(key) != 32:
        raise SecretsKeyError(f"{path} does not hold a 32-byte base64 key")
    return key


def seal(key: bytes, stream_id: str, secrets: dict[str, Any]) -> str:
    """`secrets` as sealed text (base64 of nonce ‖ ciphertext)."""
    nonce = os.urandom(_NONCE)
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, orjson.dumps(secrets), stream_id.encode())).decode()


def unseal(key: bytes, stream_id: str, sealed: str) -> dict[str, Any]:
    """Inverse of `seal`; SecretsKeyError when the key is not the one that sealed it."""
    blob = base64.b64decode(sealed)
    try:
        plain = AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], stream_id.encode())
    except InvalidTag:
        raise SecretsKeyError("the stream's secrets do not open with this secrets key") from None
    value: dict[str, Any] = orjson.loads(plain)
    return value
