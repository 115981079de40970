"""API key material: generation, digest, and parsing of the Authorization header."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "ak_"
# The visible part kept in listings and events: "ak_" plus 8 characters (48 bits, not a secret).
VISIBLE_PREFIX_LENGTH = len(KEY_PREFIX) + 8
MAX_NAME_LENGTH = 100
# The name of the keys `auditkeep demo` mints. It is how demo tells its own keys from people's (it
# revokes only its own, issue #9), so nobody else may give a key this name.
DEMO_KEY_NAME = "demo (make run)"


def generate_key() -> str:
    """A new API key: "ak_" + 256 random bits, URL-safe base64 (43 characters)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    """SHA-256 hex of the key. Random 256-bit keys need no slow hash: guessing is hopeless anyway."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def visible_prefix(key: str) -> str:
    """The part of a key that may be shown and logged."""
    return key[:VISIBLE_PREFIX_LENGTH]


def parse_authorization(header: str | None) -> str | None:
    """The key in `Authorization: Key <key>`, or a bare `<key>` (Datafold's own curl example sends it so)."""
    if not header:
        return None
    value = header.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "key":
        value = rest.strip()
    elif rest:
        return None  # another scheme ("Bearer …") or stray spaces: not a key of ours
    return value or None


def key_name_problem(name: str) -> str | None:
    """Why `name` cannot name a new key (1 to 100 printable characters, not the demo's), or None."""
    if not name.strip():
        return "a key name cannot be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"a key name has at most {MAX_NAME_LENGTH} characters"
    if not name.isprintable():
        return "a key name cannot contain control characters"
    if name.strip() == DEMO_KEY_NAME:
        return f"the name {DEMO_KEY_NAME!r} is kept for the keys auditkeep demo mints"
    return None
