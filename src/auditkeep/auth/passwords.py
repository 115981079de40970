"""Console passwords: argon2id hashes (argon2-cffi), never the password itself.

The parameters are argon2-cffi's defaults, RFC 9106's "second recommended" profile (t=3, 64 MiB, p=4);
a hash made with older parameters is upgraded at the next successful sign-in (`needs_rehash`).
"""

from __future__ import annotations

import secrets
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# NIST SP 800-63B asks for at least 8 characters; 12 keeps a console that guards an audit log out of
# reach of the commonest guesses without forcing composition rules. The upper bound stops a request
# from making the server hash megabytes.
MIN_LENGTH = 12
MAX_LENGTH = 1024

_hasher = PasswordHasher()


class WeakPasswordError(ValueError):
    """The password is too short or too long."""


def check_strength(password: str) -> None:
    """Raise WeakPasswordError unless MIN_LENGTH <= len(password) <= MAX_LENGTH."""
    if len(password) < MIN_LENGTH:
        raise WeakPasswordError(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPasswordError(f"a password may have at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    """The argon2id hash to store (salted, encoded with its parameters)."""
    check_strength(password)
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches `password_hash`.

    A missing hash still costs one verification (against a throwaway hash), so the time a sign-in takes
    does not tell whether the account exists or has a password.
    """
    if len(password) > MAX_LENGTH:
        return False
    try:
        # argon2 compares the derived digests in constant time itself.
        return _hasher.verify(password_hash or _throwaway_hash(), password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with other parameters than today's."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


@lru_cache(maxsize=1)
def _throwaway_hash() -> str:
    # Hash of a random value nobody knows: verifying against it always fails, at the normal cost.
    return _hasher.hash(secrets.token_urlsafe(32))
