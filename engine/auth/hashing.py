"""Slow salted hashes for passwords and PINs (argon2id, from argon2-cffi), and token digests.

A password or PIN is never stored or logged; only its argon2id hash (salted,
memory-hard: RFC 9106's recommended parameters, argon2-cffi's defaults). A
session token is 32 random bytes: unguessable, so a fast digest (SHA-256) is
enough to store it without storing the token.
"""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "PASSWORD_CHARS_MIN",
    "check_password_rules",
    "check_pin_rules",
    "hash_secret",
    "new_token",
    "token_digest",
    "verify_secret",
]

PASSWORD_CHARS_MIN = 12
_HASHER = PasswordHasher()


def hash_secret(secret: str) -> str:
    """The argon2id hash of a password or PIN (salt and parameters inside)."""
    return _HASHER.hash(secret)


def verify_secret(stored_hash: str, secret: str) -> bool:
    """True when `secret` matches; False for a wrong secret or an unusable hash (never raises)."""
    if not stored_hash:
        return False
    try:
        return _HASHER.verify(stored_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


def check_password_rules(password: str) -> str | None:
    """Why this password is refused, or None."""
    if len(password) < PASSWORD_CHARS_MIN:
        return f"a password needs at least {PASSWORD_CHARS_MIN} characters"
    return None


def check_pin_rules(pin: str) -> str | None:
    """Why this PIN is refused, or None: 4 to 8 digits."""
    if not (pin.isdigit() and pin.isascii() and 4 <= len(pin) <= 8):
        return "a PIN is 4 to 8 digits"
    return None


def new_token() -> str:
    """A new session token: 32 bytes from the OS's CSPRNG, URL-safe text."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the store keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()
