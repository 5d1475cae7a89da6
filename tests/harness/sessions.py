"""Accounts and sessions for tests that drive the CLI: one call makes a user and logs it in.

The account goes straight into the data directory's store (SQLite takes a
second writer beside a running node); the login goes through `vigil login`,
so the session file and the audit event are the real ones.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from engine.auth import AuthStore, Role, Setting, User, Workstation
from engine.auth.hashing import hash_secret

__all__ = ["PASSWORD", "PIN", "add_user", "register_workstation", "sign_in"]

PASSWORD = "correct horse battery staple"
PIN = "4321"
_ROOT = Path(__file__).resolve().parents[2]
_VIGIL = str(_ROOT / "bin" / "vigil")
_HASHES: dict[str, str] = {}


def _hash(secret: str) -> str:
    if secret not in _HASHES:  # argon2 is slow on purpose: hash each test secret once per run
        _HASHES[secret] = hash_secret(secret)
    return _HASHES[secret]


def add_user(data: Path, user: str, *roles: Role) -> None:
    """An account with PASSWORD and PIN (replacing one of the same id)."""
    store = AuthStore.open_private(data)
    try:
        store.put_user(User(user, user, roles, _hash(PASSWORD), _hash(PIN)))
    finally:
        store.close()


def register_workstation(data: Path, device: str, setting: Setting, name: str = "") -> None:
    """A device bound to its setting, as `vigil workstation register` does (a running node reads it at sign-in)."""
    store = AuthStore.open_private(data)
    try:
        store.put_workstation(Workstation(device, setting, name, time.time(), "admin"))
    finally:
        store.close()


def sign_in(data: Path, user: str, *roles: Role, config: Path | None = None) -> None:
    """Make the account (default role: clinician) and log in as it: later CLI calls act as this user."""
    add_user(data, user, *(roles or (Role.CLINICIAN,)))
    args = [
        _VIGIL,
        *(["--config", str(config)] if config else []),
        "login",
        user,
        "--secrets-stdin",
        "--data",
        str(data),
    ]
    out = subprocess.run(args, input=f"{PASSWORD}\n".encode(), capture_output=True, cwd=_ROOT, timeout=60, check=False)
    assert out.returncode == 0, out.stderr.decode()
