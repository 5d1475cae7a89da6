"""The admin requests of authentication: login, lock, unlock, break-the-glass, accounts, reviews, decisions.

One `AuthEndpoint` per authority over a data directory: the running node's
(its admin socket), or, when no node runs, the CLI's own over the same store
and log (`engine.cli.session`). Either way every audit event owed is appended
to the log *before* the answer leaves (fail closed: an access that cannot be
audited is not served), and the service's blocking work (SQLite, argon2) runs
in a worker thread, off the event loop that serves the ACK path.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar, final

import anyio
import msgspec
import structlog

from engine.auth.api_clients import ApiClients
from engine.auth.audit_events import audit_envelope
from engine.auth.clients import TOKEN_DAYS_DEFAULT, ApiClient, Mode
from engine.auth.service import Access, AccessRefusedError, AuditItem, AuthService, Credentials
from engine.auth.settings import Permission, Role, Setting
from engine.core.model import Envelope
from engine.infra.admin_socket import AdminError, Handler
from engine.wal import DiskFullError, WALFailedError

__all__ = ["OPERATIONS", "AuditSink", "AuthEndpoint", "credentials_of"]

# The requests this endpoint answers (a CLI with no node to ask can answer these itself).
OPERATIONS: Final = frozenset(
    {
        "login",
        "unlock",
        "lock",
        "logout",
        "whoami",
        "break_glass",
        "authorize",
        "accessed",
        "acted",
        "users",
        "user_add",
        "user_disable",
        "user_roles",
        "reviews",
        "review_close",
        "secrets_change",
        "user_reset",
        "clients",
        "client_add",
        "client_revoke",
        "client_rotate",
        "workstations",
        "workstation_register",
        "workstation_forget",
        "workstation_of",
    }
)

AuditSink = Callable[[Sequence[Envelope]], Awaitable[None]]
_T = TypeVar("_T")
_log = structlog.get_logger("vigil.auth")


def credentials_of(request: dict[str, Any]) -> Credentials:
    """The `auth` field of a request (token and device); empty when absent."""
    auth = request.get("auth")
    if not isinstance(auth, dict):
        return Credentials()
    token, device = auth.get("token"), auth.get("device")
    return Credentials(token if isinstance(token, str) else "", device if isinstance(device, str) else "")


def _text(request: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = request.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise AdminError(f"the request needs {name}")
    return value


def _enum(kind: Callable[[str], _T], value: str, what: str) -> _T:
    try:
        return kind(value)
    except ValueError:
        raise AdminError(f"unknown {what} {value!r}") from None


@final
class AuthEndpoint:
    """Authentication requests, and `authorize` for every other request that shows PHI."""

    def __init__(self, service: AuthService, sink: AuditSink, *, node: str, log_denials: bool = True) -> None:
        self.service = service
        self.clients = ApiClients(service.store, service.clock, service.done_by)
        self._sink = sink
        self._node = node
        self._log_denials = log_denials  # the node's log; a CLI answering for itself says it in its one line

    def handlers(self) -> dict[str, Handler]:
        handlers: dict[str, Handler] = {
            "login": self._login,
            "unlock": self._unlock,
            "lock": self._lock,
            "logout": self._logout,
            "whoami": self._whoami,
            "break_glass": self._break_glass,
            "authorize": self._authorize_request,
            "accessed": self._accessed,
            "acted": self._acted,
            "users": self._users,
            "user_add": self._user_add,
            "user_disable": self._user_disable,
            "user_roles": self._user_roles,
            "reviews": self._reviews,
            "review_close": self._review_close,
            "secrets_change": self._secrets_change,
            "user_reset": self._user_reset,
            "clients": self._clients,
            "client_add": self._client_add,
            "client_revoke": self._client_revoke,
            "client_rotate": self._client_rotate,
            "workstations": self._workstations,
            "workstation_register": self._workstation_register,
            "workstation_forget": self._workstation_forget,
            "workstation_of": self._workstation_of,
        }
        assert handlers.keys() == OPERATIONS
        return handlers

    async def audit(self, items: list[AuditItem]) -> None:
        """Append audit events to the log; an access that cannot be audited is refused."""
        if not items:
            return
        for _patient, event in items:
            if self._log_denials and event.outcome != "allowed":
                # For operators and their alerting: what was refused and why, never whom it was about.
                # The user id is left out for a failed login: people type passwords into that field.
                user = "" if event.action == "login" else event.user
                _log.warning("auth.denied", action=event.action, user=user, why=event.detail, severity=event.severity)
        envelopes = [audit_envelope(event, patient, node=self._node) for patient, event in items]
        try:
            await self._sink(envelopes)
        except (DiskFullError, WALFailedError, OSError) as exc:  # serve nothing unaudited
            raise AdminError(f"refused: the access could not be written to the audit trail ({exc})") from None

    async def _refused(self, refused: AccessRefusedError) -> AdminError:
        """The refusal's audit events reach the log before the refusal is answered."""
        await self.audit(refused.audit)
        return AdminError(refused.reason)

    async def _run(self, work: Callable[[], _T]) -> _T:
        """Service work in a worker thread (SQLite, argon2)."""
        try:
            return await anyio.to_thread.run_sync(work)
        except AccessRefusedError as refused:
            raise await self._refused(refused) from None

    async def _act(self, work: Callable[[], list[AuditItem]]) -> None:
        """Service work whose only result is the audit events it owes."""
        await self.audit(await self._run(work))

    def _decide(self, request: dict[str, Any], permission: Permission, patient: str, action: str) -> Access:
        # On the event loop: a decision reads memory (the store only at a first look; never a write),
        # where a worker thread's round trip would cost ten times that.
        return self.service.authorize(
            credentials_of(request),
            permission,
            patient=patient,
            action=action or permission.value,
            passive=request.get("passive") is True,
        )

    async def authorize(
        self, request: dict[str, Any], permission: Permission, *, patient: str = "", action: str = ""
    ) -> Access:
        """Allow this request (audited) or raise `AdminError` with the reason (audited too)."""
        try:
            access = self._decide(request, permission, patient, action)
        except AccessRefusedError as refused:
            raise await self._refused(refused) from None
        await self.audit(access.audit)
        return access

    async def authorize_client(
        self, token: str, resource_type: str, mode: Mode, *, patients: Sequence[str] = (), action: str
    ) -> ApiClient:
        """Allow an API client's request (audited before it is answered) or raise `AccessRefusedError`.

        A token already seen is decided on the event loop (a lookup in memory); any other reads
        the store in a worker thread, never on the loop that answers critical results (a stream of
        made-up tokens would otherwise stall it on SQLite). The refusal's audit events are in the
        log when it is raised.
        """

        def decide() -> tuple[ApiClient, list[AuditItem]]:
            return self.clients.authorize(token, resource_type, mode, patients=patients, action=action)

        try:
            client, audit = decide() if self.clients.known(token) else await anyio.to_thread.run_sync(decide)
        except AccessRefusedError as refused:
            await self.audit(refused.audit)
            raise
        await self.audit(audit)
        return client

    async def persist_sessions(self) -> None:
        """Write sessions' activity to the store every `activity_persist_interval_s` (run for the node's life)."""
        try:
            while True:
                await anyio.sleep(self.service.config.activity_persist_interval_s)
                await self._flush()
        finally:
            with anyio.CancelScope(shield=True):
                await self._flush()

    async def _flush(self) -> None:
        try:
            await anyio.to_thread.run_sync(self.service.flush)
        except (sqlite3.Error, OSError) as exc:
            # Activity only (the sessions' state changes were written at once): try again next time.
            _log.warning("auth.flush_failed", error=type(exc).__name__)

    async def _authorize_request(self, request: dict[str, Any]) -> object:
        """For commands that read files themselves after asking (`vigil log`, `quarantine show`...)."""
        permission = _enum(Permission, _text(request, "permission"), "permission")
        patient = _text(request, "patient", required=False)
        access = await self.authorize(
            request, permission, patient=patient, action=_text(request, "action", required=False)
        )
        return {"user": access.user.id, "role": access.decision.role, "grant": access.decision.grant}

    async def _accessed(self, request: dict[str, Any]) -> object:
        """A listing showed these patients: one audit event each (after re-checking the permission)."""
        permission = _enum(Permission, _text(request, "permission"), "permission")
        patients = request.get("patients")
        if not isinstance(patients, list) or not all(isinstance(p, str) for p in patients):
            raise AdminError("the request needs patients (a list of keys)")
        action = _text(request, "action", required=False) or permission.value
        try:
            access = self._decide(request, permission, "", action)
        except AccessRefusedError as refused:
            raise await self._refused(refused) from None
        # The patients shown stand for the request's own event: one record each, not one more for the listing.
        await self.audit(self.service.accessed(access, action, patients))
        return {"audited": len(set(patients) - {""})}

    async def acted(self, access: Access, action: str, detail: str, *, patient: str = "") -> None:
        """An action an authorised user carried out, with what became of it, into the audit trail."""
        await self.audit([(patient, self.service.done_by(access, action, detail))])

    async def _acted(self, request: dict[str, Any]) -> object:
        """An action a CLI carried out itself (no node ran): its permission checked again, then audited."""
        permission = _enum(Permission, _text(request, "permission"), "permission")
        action, detail = _text(request, "action"), _text(request, "detail", required=False)
        try:
            access = self._decide(request, permission, "", action)
        except AccessRefusedError as refused:
            raise await self._refused(refused) from None
        await self.acted(access, action, detail)
        return {"audited": 1}

    async def _login(self, request: dict[str, Any]) -> object:
        user, password = _text(request, "user"), _text(request, "password")
        asked = _text(request, "setting", required=False)
        setting = _enum(Setting, asked, "setting") if asked else None  # a browser asks for none
        device = _text(request, "device")
        login = await self._run(lambda: self.service.login(user, password, setting, device))
        await self.audit(login.audit)
        return {"token": login.token, **_session_json(login.session)}

    async def _unlock(self, request: dict[str, Any]) -> object:
        creds, pin = credentials_of(request), _text(request, "pin")
        session, audit = await self._run(lambda: self.service.unlock(creds, pin))
        await self.audit(audit)
        return _session_json(session)

    async def _lock(self, request: dict[str, Any]) -> object:
        creds = credentials_of(request)
        await self._act(lambda: self.service.lock(creds))
        return {"locked": True}

    async def _logout(self, request: dict[str, Any]) -> object:
        creds = credentials_of(request)
        await self._act(lambda: self.service.logout(creds))
        return {"ended": True}

    async def _whoami(self, request: dict[str, Any]) -> object:
        creds = credentials_of(request)
        session, state, why = await self._run(lambda: self.service.whoami(creds))
        shown = _session_json(session)
        if state.value != "active":
            shown.pop("context")  # the context (a patient key) only to an active session
        # The screen locks itself at this idle time too (the console), so nothing stays shown until a request.
        idle_lock_s = self.service.config.idle_timeout_s.of(session.setting)
        return {**shown, "state": state.value, "why": why, "idle_lock_s": idle_lock_s}

    async def _break_glass(self, request: dict[str, Any]) -> object:
        creds = credentials_of(request)
        patient, reason = _text(request, "patient"), _text(request, "reason", required=False)
        note, secret = _text(request, "note", required=False), _text(request, "secret", required=False)
        grant, audit = await self._run(lambda: self.service.break_glass(creds, patient, reason, note, secret))
        await self.audit(audit)
        return msgspec.to_builtins(grant)

    async def _secrets_change(self, request: dict[str, Any]) -> object:
        creds, current = credentials_of(request), _text(request, "current")
        password, pin = _text(request, "password", required=False), _text(request, "pin", required=False)
        await self._act(lambda: self.service.change_secrets(creds, current, password=password, pin=pin))
        return {"password": bool(password), "pin": bool(pin)}

    async def _users(self, request: dict[str, Any]) -> object:
        await self.authorize(request, Permission.USER_MANAGE)
        users = await anyio.to_thread.run_sync(self.service.users)
        return [
            {"id": u.id, "name": u.name, "roles": [r.value for r in u.roles], "disabled": u.disabled} for u in users
        ]

    async def _user_add(self, request: dict[str, Any]) -> object:
        user_id, name = _text(request, "user"), _text(request, "name", required=False)
        password, pin = _text(request, "password"), _text(request, "pin")
        roles = self._roles(request)
        bootstrap = await anyio.to_thread.run_sync(self.service.needs_bootstrap)
        if bootstrap and request.get("network") is not False:
            # Only someone on the node's own host (who can reach its owner-only socket) may make the first account.
            raise AdminError("the first administrator is added on the node's host, over its admin socket")
        by = None if bootstrap else await self.authorize(request, Permission.USER_MANAGE)
        await self._act(lambda: self.service.add_user(by, user_id, name=name, roles=roles, password=password, pin=pin))
        return {"user": user_id, "roles": [r.value for r in roles], "first_administrator": bootstrap}

    async def _user_disable(self, request: dict[str, Any]) -> object:
        user_id = _text(request, "user")
        by = await self.authorize(request, Permission.USER_MANAGE)
        await self._act(lambda: self.service.disable_user(by, user_id))
        return {"user": user_id, "disabled": True}

    async def _user_roles(self, request: dict[str, Any]) -> object:
        user_id, roles = _text(request, "user"), self._roles(request)
        by = await self.authorize(request, Permission.USER_MANAGE)
        await self._act(lambda: self.service.set_roles(by, user_id, roles))
        return {"user": user_id, "roles": [r.value for r in roles]}

    async def _user_reset(self, request: dict[str, Any]) -> object:
        user_id, password, pin = _text(request, "user"), _text(request, "password"), _text(request, "pin")
        by = await self.authorize(request, Permission.USER_MANAGE)
        await self._act(lambda: self.service.reset_secrets(by, user_id, password=password, pin=pin))
        return {"user": user_id, "reset": True}

    async def _clients(self, request: dict[str, Any]) -> object:
        await self.authorize(request, Permission.USER_MANAGE)
        return [_client_json(c) for c in await anyio.to_thread.run_sync(self.clients.listed)]

    async def _client_add(self, request: dict[str, Any]) -> object:
        client_id, scopes = _text(request, "client"), request.get("scopes")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise AdminError("the request needs scopes (a list)")
        days = _days(request)
        by = await self.authorize(request, Permission.USER_MANAGE)
        token, audit = await self._run(lambda: self.clients.add(by, client_id, scopes, days))
        await self.audit(audit)
        return {"client": client_id, "scopes": scopes, "token": token, "days": days}

    async def _client_rotate(self, request: dict[str, Any]) -> object:
        client_id, days = _text(request, "client"), _days(request)
        by = await self.authorize(request, Permission.USER_MANAGE)
        token, audit = await self._run(lambda: self.clients.rotate(by, client_id, days))
        await self.audit(audit)
        return {"client": client_id, "token": token, "days": days}

    async def _client_revoke(self, request: dict[str, Any]) -> object:
        client_id = _text(request, "client")
        by = await self.authorize(request, Permission.USER_MANAGE)
        await self._act(lambda: self.clients.revoke(by, client_id))
        return {"client": client_id, "revoked": True}

    async def _workstations(self, request: dict[str, Any]) -> object:
        await self.authorize(request, Permission.USER_MANAGE)
        return [msgspec.to_builtins(w) for w in await anyio.to_thread.run_sync(self.service.workstations)]

    async def _workstation_register(self, request: dict[str, Any]) -> object:
        device, name = _text(request, "device"), _text(request, "name", required=False)
        setting = _enum(Setting, _text(request, "setting"), "setting")
        by = await self.authorize(request, Permission.USER_MANAGE)
        await self._act(lambda: self.service.register_workstation(by, device, setting, name))
        return {"device": device, "setting": setting.value, "name": name}

    async def _workstation_forget(self, request: dict[str, Any]) -> object:
        device = _text(request, "device")
        by = await self.authorize(request, Permission.USER_MANAGE)
        await self._act(lambda: self.service.forget_workstation(by, device))
        return {"device": device, "forgotten": True}

    async def _workstation_of(self, request: dict[str, Any]) -> object:
        """No session needed: what a sign-in from this device will get (its setting and idle lock; no PHI)."""
        device = _text(request, "device")
        station = await anyio.to_thread.run_sync(self.service.workstation, device)
        setting = station.setting if station is not None else self.service.config.unregistered_setting
        return {
            "device": device,
            "registered": station is not None,
            "name": station.name if station is not None else "",
            "setting": setting.value,
            "idle_lock_s": self.service.config.idle_timeout_s.of(setting),
        }

    @staticmethod
    def _roles(request: dict[str, Any]) -> tuple[Role, ...]:
        roles = request.get("roles")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise AdminError("the request needs roles (a list)")
        return tuple(_enum(Role, r, "role") for r in roles)

    async def _reviews(self, request: dict[str, Any]) -> object:
        access = await self.authorize(request, Permission.AUDIT_READ, action="audit_read")
        open_only = not request.get("all")
        reviews = await anyio.to_thread.run_sync(lambda: self.service.reviews(open_only=open_only))
        await self.audit(self.service.accessed(access, "audit_reviews", [r.patient for r in reviews]))
        return msgspec.to_builtins(reviews)

    async def _review_close(self, request: dict[str, Any]) -> object:
        review_id, outcome = _text(request, "review"), _text(request, "outcome")
        note = _text(request, "note", required=False)
        by = await self.authorize(request, Permission.AUDIT_REVIEW, action="audit_review")
        review, audit = await self._run(lambda: self.service.close_review(by, review_id, outcome, note))
        await self.audit(audit)
        return msgspec.to_builtins(review)


def _days(request: dict[str, Any]) -> int:
    """A token's lifetime in days (`days`; the default when absent)."""
    days = request.get("days", TOKEN_DAYS_DEFAULT)
    if isinstance(days, bool) or not isinstance(days, int):
        raise AdminError("days is a whole number of days")
    return days


def _client_json(client: ApiClient) -> dict[str, Any]:
    return {
        "client": client.id,
        "scopes": list(client.scopes),
        "created_at": client.created_at,
        "created_by": client.created_by,
        "revoked_at": client.revoked_at or None,
        "revoked_by": client.revoked_by or None,
        "expires_at": client.expires_at or None,
        "rotated_at": client.rotated_at or None,
    }


def _session_json(session: Any) -> dict[str, Any]:
    return {
        "session": session.id,
        "user": session.user,
        "setting": session.setting.value,
        "device": session.device,
        "created_at": session.created_at,
        "last_seen_at": session.last_seen_at,
        "context": session.context,
    }
