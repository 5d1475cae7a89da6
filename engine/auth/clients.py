"""API clients: systems that call the HTTP API with a bearer token, allowed by FHIR-style scopes. Pure.

A client is registered by an administrator (`vigil client add NAME --scope
...`) and shown its token once; only the token's SHA-256 is kept, as for
sessions. Scopes follow SMART on FHIR's system scopes:
`system/Observation.read`, `system/Patient.read`, `system/*.read`,
`system/*.write`, `system/*.*`. HL7 v2 over HTTP carries any kind of message,
so it needs a write scope on every type (`system/*.write`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, Literal, final

import msgspec

__all__ = [
    "SCOPE_RULE",
    "TOKEN_DAYS_DEFAULT",
    "TOKEN_DAYS_MAX",
    "ApiClient",
    "Mode",
    "allows",
    "client_id_problem",
    "parse_scopes",
]

TOKEN_DAYS_DEFAULT: Final = 90  # a token's lifetime unless the administrator says otherwise
TOKEN_DAYS_MAX: Final = 730

Mode = Literal["read", "write"]

_SCOPE: Final = re.compile(r"system/(\*|[A-Z][A-Za-z]{1,63})\.(read|write|\*)")
SCOPE_RULE: Final = "system/TYPE.read, system/TYPE.write or system/TYPE.* (TYPE a FHIR resource type, or *)"
_CLIENT_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@final
class ApiClient(msgspec.Struct, frozen=True):
    """A registered API client; the token itself is never kept."""

    id: str
    scopes: tuple[str, ...]
    token_hash: str
    created_at: float
    created_by: str
    revoked_at: float = 0.0
    revoked_by: str = ""
    expires_at: float = 0.0  # 0: never (clients added before tokens had a lifetime)
    rotated_at: float = 0.0

    @property
    def revoked(self) -> bool:
        return self.revoked_at > 0

    def expired(self, now: float) -> bool:
        return 0 < self.expires_at <= now


def parse_scopes(texts: Iterable[str]) -> tuple[str, ...]:
    """The scopes as given, checked, without repeats.

    Raises:
        ValueError: a scope is not one of `SCOPE_RULE`'s forms, or none is given.
    """
    scopes = tuple(dict.fromkeys(t.strip() for t in texts))
    for scope in scopes:
        if _SCOPE.fullmatch(scope) is None:
            raise ValueError(f"{scope!r} is not a scope: use {SCOPE_RULE}")
    if not scopes:
        raise ValueError(f"a client needs at least one scope ({SCOPE_RULE})")
    return scopes


def client_id_problem(client_id: str) -> str | None:
    """Why `client_id` cannot name a client, or None."""
    if _CLIENT_ID.fullmatch(client_id) is None:
        return f"{client_id!r} cannot name a client: 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
    return None


def allows(scopes: Iterable[str], resource_type: str, mode: Mode) -> bool:
    """Whether any of `scopes` allows `mode` on `resource_type` (`*`: every type, as HL7 v2 needs)."""
    for scope in scopes:
        match = _SCOPE.fullmatch(scope)
        if match is None:
            continue
        kind, what = match.groups()
        if kind in ("*", resource_type) and what in ("*", mode):
            return True
    return False
