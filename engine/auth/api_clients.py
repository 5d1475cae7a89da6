"""Registered API clients over the auth store: add, list, revoke, and the decision on each HTTP request.

Like `AuthService`, synchronous and free of the log: each method returns the
audit events it owes, and a refusal raises `AccessRefusedError` carrying them.
What is audited: every client added or revoked, every refused request, and
every allowed read of a patient's data (one event per patient, naming the
client). Writes are not: the log records every message with its source,
which names the client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import final

import msgspec

from engine.auth.clients import TOKEN_DAYS_MAX, ApiClient, Mode, allows, client_id_problem, parse_scopes
from engine.auth.hashing import new_token, token_digest
from engine.auth.service import Access, AccessRefusedError, AuditItem, iso
from engine.auth.store import AuthStore
from engine.core.model import RecordAccessed

__all__ = ["CLIENT_ROLE", "ApiClients", "ScopeRefusedError"]

_DAY = 86_400.0

CLIENT_ROLE = "api_client"  # the role an audit event names for a client's request

# An administrator's act as an audit event (`AuthService.done_by`).
DoneBy = Callable[[Access, str, str, float | None], RecordAccessed]


class ScopeRefusedError(AccessRefusedError):
    """A known client asked for what its scopes do not allow (HTTP 403; an unknown token is 401)."""


@final
class ApiClients:
    """The API clients of one node's auth store."""

    def __init__(self, store: AuthStore, clock: Callable[[], float], done_by: DoneBy) -> None:
        self._store = store
        self._clock = clock
        self._done_by = done_by
        self._by_token: dict[str, ApiClient] = {}  # a client looked up once stays in memory until it changes
        self._lock = threading.Lock()

    def add(self, by: Access, client_id: str, scopes: Iterable[str], days: int) -> tuple[str, list[AuditItem]]:
        """Register a client whose token lasts `days`; returns the token, shown once and never kept (its SHA-256 is)."""
        problem = client_id_problem(client_id)
        if problem is not None:
            raise AccessRefusedError(problem, [])
        try:
            checked = parse_scopes(scopes)
        except ValueError as exc:
            raise AccessRefusedError(str(exc), []) from None
        _check_days(days)
        now = self._clock()
        token = "vgc_" + new_token()
        client = ApiClient(client_id, checked, token_digest(token), now, by.user.id, expires_at=now + days * _DAY)
        if not self._store.add_client(client):
            raise AccessRefusedError(f"client {client_id} exists already (ids are never reused)", [])
        detail = f"added client {client_id}: {' '.join(checked)}; token for {days} days"
        return token, [("", self._done_by(by, "client_add", detail, now))]

    def rotate(self, by: Access, client_id: str, days: int) -> tuple[str, list[AuditItem]]:
        """A new token for a client, lasting `days`; the old one is refused from now on."""
        client = self._store.client(client_id)
        if client is None:
            raise AccessRefusedError(f"no client {client_id}", [])
        if client.revoked:
            raise AccessRefusedError(f"client {client_id} is revoked: add a new client instead", [])
        _check_days(days)
        now = self._clock()
        token = "vgc_" + new_token()
        rotated = msgspec.structs.replace(
            client, token_hash=token_digest(token), expires_at=now + days * _DAY, rotated_at=now
        )
        self._store.put_client(rotated)
        with self._lock:
            self._by_token.pop(client.token_hash, None)
        return token, [("", self._done_by(by, "client_rotate", f"new token for client {client_id}: {days} days", now))]

    def revoke(self, by: Access, client_id: str) -> list[AuditItem]:
        """Revoke a client's token at once; the client stays listed (audit trails name it)."""
        client = self._store.client(client_id)
        if client is None:
            raise AccessRefusedError(f"no client {client_id}", [])
        if client.revoked:
            raise AccessRefusedError(f"client {client_id} was revoked already", [])
        now = self._clock()
        revoked = msgspec.structs.replace(client, revoked_at=now, revoked_by=by.user.id)
        self._store.put_client(revoked)
        with self._lock:
            self._by_token.pop(client.token_hash, None)
        return [("", self._done_by(by, "client_revoke", f"revoked client {client_id}", now))]

    def known(self, token: str) -> bool:
        """Whether this token's client is in memory: its decision then reads no store."""
        with self._lock:
            return token_digest(token) in self._by_token

    def listed(self) -> list[ApiClient]:
        return self._store.clients()

    def authorize(
        self, token: str, resource_type: str, mode: Mode, *, patients: Iterable[str] = (), action: str
    ) -> tuple[ApiClient, list[AuditItem]]:
        """The client a bearer token names, if its scopes allow `mode` on `resource_type`.

        Returns the audit events owed: one per patient for a read (an access to
        their data). Raises `AccessRefusedError` (with its audit event) for an
        unknown or revoked token or a scope that does not allow the request.
        """
        now = self._clock()
        client = self._client(token_digest(token)) if token else None
        if client is None or client.revoked:
            why = "a bearer token is needed" if not token else "unknown or revoked token"
            raise AccessRefusedError(why, [("", self._event("", action, allowed=False, detail=why, now=now))])
        if client.expired(now):
            why = f"the token of client {client.id} expired on {iso(client.expires_at)[:10]}: rotate it"
            raise AccessRefusedError(why, [("", self._event(client.id, action, allowed=False, detail=why, now=now))])
        if not allows(client.scopes, resource_type, mode):
            why = f"client {client.id} has no scope for {mode} of {resource_type} (system/{resource_type}.{mode})"
            event = self._event(client.id, action, allowed=False, detail=why, now=now)
            raise ScopeRefusedError(why, [(p, event) for p in patients] or [("", event)])
        if mode == "write":
            return client, []
        event = self._event(client.id, action, allowed=True, detail="", now=now)
        return client, [(p, event) for p in dict.fromkeys(patients) if p]

    def _client(self, token_hash: str) -> ApiClient | None:
        with self._lock:
            known = self._by_token.get(token_hash)
        if known is not None:
            return known
        found = self._store.client_by_token(token_hash)
        if found is not None and not found.revoked:
            with self._lock:
                self._by_token[token_hash] = found
        return found

    @staticmethod
    def _event(client: str, action: str, *, allowed: bool, detail: str, now: float) -> RecordAccessed:
        return RecordAccessed(
            user=f"client:{client}" if client else "client:unknown",
            role=CLIENT_ROLE,
            action=action,
            outcome="allowed" if allowed else "denied",
            at=iso(now),
            device="http",
            detail=detail,
        )


def _check_days(days: int) -> None:
    if not 1 <= days <= TOKEN_DAYS_MAX:
        raise AccessRefusedError(f"a token lasts 1 to {TOKEN_DAYS_MAX} days, not {days}", [])
