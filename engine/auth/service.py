"""Authentication and authorisation over the store: login, lock and PIN resume, break-the-glass, decisions.

Synchronous and free of the log: every method returns the audit events it
owes (`AuditItem`s), and a refusal raises `AccessRefusedError` carrying them; the
caller appends them to the log *before* it answers, so nothing is disclosed
unaudited (fail closed). Time comes from `clock` (seconds since the epoch):
the tests drive it by hand.

What is audited: every use of a PHI permission (allowed or not), every
refusal of anything, every login, failed login, lock, unlock, logout,
break-the-glass and account change. Allowed reads of non-PHI views (status,
log metadata) are not: a monitoring loop would bury the trail.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final, final

import msgspec

from engine.auth.hashing import (
    check_password_rules,
    check_pin_rules,
    hash_secret,
    new_token,
    token_digest,
    verify_secret,
)
from engine.auth.policy import (
    Decision,
    Grant,
    Review,
    SessionRecord,
    SessionState,
    User,
    decide,
    session_state,
)
from engine.auth.settings import AuthConfig, Permission, Role, Setting
from engine.auth.store import AuthStore
from engine.auth.workstations import Workstation, device_problem
from engine.core.errors import VigilError
from engine.core.model import RecordAccessed

__all__ = ["PHI_PERMISSIONS", "Access", "AccessRefusedError", "AuditItem", "AuthService", "Credentials", "Login"]

AuditItem = tuple[str, RecordAccessed]  # (patient key or "", the event)

# Permissions whose every use is audited, allowed or not.
PHI_PERMISSIONS: Final = frozenset(
    {
        Permission.RECORD_READ,
        Permission.WORKLIST_READ,
        Permission.RESULT_ACKNOWLEDGE,
        Permission.LOG_CONTENT,
        Permission.QUARANTINE_CONTENT,
        Permission.AUDIT_READ,
    }
)
_QUERIES_KEPT: Final = 10


@final
class Credentials(msgspec.Struct, frozen=True):
    """What a client sends with each request: its session token and its device."""

    token: str = ""
    device: str = ""


@final
class Login(msgspec.Struct, frozen=True):
    """A new session: the token is shown to the client once and never stored."""

    token: str
    session: SessionRecord
    audit: list[AuditItem]


@final
class Access(msgspec.Struct, frozen=True):
    """An allowed request: who, as which role, and the audit events owed for it."""

    session: SessionRecord
    user: User
    decision: Decision
    audit: list[AuditItem]


class AccessRefusedError(VigilError):
    """Refused: `reason` is one line for the client; `audit` must be appended before answering."""

    def __init__(self, reason: str, audit: list[AuditItem]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.audit = audit


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


@final
class AuthService:
    """Users, sessions, grants and decisions for one node."""

    def __init__(self, store: AuthStore, config: AuthConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        self._sessions: dict[str, SessionRecord] = {}  # by token hash: the hot path reads no disk
        self._dirty: set[str] = set()  # token hashes whose activity or lock is not on disk yet
        # Users and grants as this service last read or wrote them: a decision on the event
        # loop must never wait for the store's lock (a flush may hold it through an fsync).
        self._users: dict[str, User] = {}
        self._grants: dict[str, list[Grant]] = {}
        # Every session that may still be live, so the counts `vigil status` shows are right from the start.
        for session in store.sessions_since(self._clock() - config.absolute_timeout_s):
            self._sessions[session.token_hash] = session

    @property
    def store(self) -> AuthStore:
        return self._store

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    @property
    def config(self) -> AuthConfig:
        return self._config

    # -- audit -------------------------------------------------------------------------

    def _event(
        self,
        session: SessionRecord | None,
        action: str,
        *,
        allowed: bool,
        user: str = "",
        role: str = "",
        reason: str = "",
        detail: str = "",
        severity: str = "",
        now: float,
    ) -> RecordAccessed:
        return RecordAccessed(
            user=user or (session.user if session else ""),
            role=role,
            action=action,
            outcome="allowed" if allowed else "denied",
            at=iso(now),
            setting=session.setting.value if session else "",
            reason=reason,
            device=session.device if session else "",
            detail=detail,
            severity=severity,
        )

    # -- users -------------------------------------------------------------------------

    def needs_bootstrap(self) -> bool:
        """True while no account exists: the first administrator may then be added without a session."""
        return not self._store.users()

    def add_user(
        self, by: Access | None, user_id: str, *, name: str, roles: tuple[Role, ...], password: str, pin: str
    ) -> list[AuditItem]:
        """Add an account (an administrator's `by`, or the first administrator when there is none)."""
        now = self._clock()
        if by is None and not (self.needs_bootstrap() and Role.ADMINISTRATOR in roles):
            raise AccessRefusedError(
                "log in as an administrator first (only the first account may be added without)", []
            )
        problems = [p for p in (_user_id_problem(user_id), check_password_rules(password), check_pin_rules(pin)) if p]
        if not roles:
            problems.append("a user needs at least one role")
        if problems:
            raise AccessRefusedError("; ".join(problems), [])
        user = User(user_id, name, roles, hash_secret(password), hash_secret(pin))
        if not self._store.add_user(user):
            self._users.pop(user_id, None)
            raise AccessRefusedError(f"user {user_id} exists already (ids are never reused)", [])
        actor = by.session if by else None
        detail = f"added {user_id} as {','.join(r.value for r in roles)}" + ("" if by else " (first administrator)")
        role = by.decision.role if by else Role.ADMINISTRATOR.value
        return [
            (
                "",
                self._event(
                    actor,
                    "user_add",
                    allowed=True,
                    user=by.user.id if by else user_id,
                    role=role,
                    detail=detail,
                    now=now,
                ),
            )
        ]

    def disable_user(self, by: Access, user_id: str) -> list[AuditItem]:
        """Disable an account and end its sessions at once (the id is kept: audit trails name it)."""
        now = self._clock()
        user = self._require_user(user_id)
        self._put_user(msgspec.structs.replace(user, disabled=True))
        self._end_sessions(user_id, "user disabled", now)
        return [("", self.done_by(by, "user_disable", f"disabled {user_id}", now))]

    def reset_secrets(self, by: Access, user_id: str, *, password: str, pin: str) -> list[AuditItem]:
        """An administrator sets a forgotten password and PIN; the user's sessions end and a lockout lifts."""
        now = self._clock()
        user = self._require_user(user_id)
        problems = [p for p in (check_password_rules(password), check_pin_rules(pin)) if p]
        if problems:
            raise AccessRefusedError("; ".join(problems), [])
        reset = msgspec.structs.replace(
            user, password_hash=hash_secret(password), pin_hash=hash_secret(pin), failures=0, locked_until=0.0
        )
        self._put_user(reset)
        self._end_sessions(user_id, "secrets reset", now)
        return [("", self.done_by(by, "secrets_reset", f"reset the password and PIN of {user_id}", now))]

    def set_roles(self, by: Access, user_id: str, roles: tuple[Role, ...]) -> list[AuditItem]:
        now = self._clock()
        if not roles:
            raise AccessRefusedError("a user needs at least one role", [])
        user = self._require_user(user_id)
        self._put_user(msgspec.structs.replace(user, roles=roles))
        detail = f"{user_id}: {','.join(r.value for r in user.roles)} -> {','.join(r.value for r in roles)}"
        return [("", self.done_by(by, "user_roles", detail, now))]

    def _end_sessions(self, user_id: str, reason: str, now: float, *, keep: str = "") -> None:
        """End every open session of a user (but `keep`), durably: their tokens are refused from now on."""
        for session in self._store.sessions_of(user_id):
            if session.id != keep and not session.ended_at:
                self._save(msgspec.structs.replace(session, ended_at=now, end_reason=reason))

    def done_by(self, by: Access, action: str, detail: str, now: float | None = None) -> RecordAccessed:
        """The audit event of an action an authorised user took (an account change, a review, a quarantine action)."""
        now = self._clock() if now is None else now
        return self._event(
            by.session, action, allowed=True, user=by.user.id, role=by.decision.role, detail=detail, now=now
        )

    def users(self) -> list[User]:
        return self._store.users()

    # -- workstations ----------------------------------------------------------

    def setting_of(self, device: str, asked: Setting | None = None) -> Setting:
        """A sign-in's setting: the device's registration, else what the caller asked, else the unregistered one."""
        station = self._store.workstation(device)
        if station is not None:
            return station.setting
        return asked if asked is not None else self._config.unregistered_setting

    def workstation(self, device: str) -> Workstation | None:
        return self._store.workstation(device)

    def workstations(self) -> list[Workstation]:
        return self._store.workstations()

    def register_workstation(self, by: Access, device: str, setting: Setting, name: str) -> list[AuditItem]:
        """Bind a device to its clinical setting (again: the new one replaces the old); audited."""
        problem = device_problem(device)
        if problem is not None:
            raise AccessRefusedError(problem, [])
        now = self._clock()
        self._store.put_workstation(Workstation(device, setting, name, now, by.user.id))
        detail = f"workstation {device} ({name or 'unnamed'}): {setting.value}"
        return [("", self.done_by(by, "workstation_register", detail, now))]

    def forget_workstation(self, by: Access, device: str) -> list[AuditItem]:
        if not self._store.forget_workstation(device):
            raise AccessRefusedError(f"no workstation {device} is registered", [])
        return [("", self.done_by(by, "workstation_forget", f"workstation {device}"))]

    def _user(self, user_id: str) -> User | None:
        """From memory; from the store the first time (a user added by another process is then seen)."""
        user = self._users.get(user_id)
        if user is None:
            user = self._store.user(user_id)
            if user is not None:
                self._users[user_id] = user
        return user

    def _put_user(self, user: User) -> None:
        self._store.put_user(user)
        self._users[user.id] = user

    def _grants_of(self, session_id: str) -> list[Grant]:
        if session_id not in self._grants:
            self._grants[session_id] = self._store.grants_of(session_id)
        return self._grants[session_id]

    def _require_user(self, user_id: str) -> User:
        user = self._store.user(user_id)
        if user is None:
            raise AccessRefusedError(f"no user {user_id}", [])
        return user

    # -- sessions ------------------------------------------------------------------------

    def login(self, user_id: str, password: str, setting: Setting | None, device: str) -> Login:
        """A new session, or `AccessRefusedError` (audited) for a wrong password, a disabled or locked-out account.

        The session's setting is the device's registered one whatever was asked
        (`setting_of`); None asks for nothing (a browser: the user does not choose).
        """
        now = self._clock()
        setting = self.setting_of(device, setting)
        user = self._store.user(user_id)  # fresh at every login: the account may have changed elsewhere
        if user is not None:
            self._users[user_id] = user
        probe = SessionRecord("", "", user_id, setting, device, now, now)
        refused = "wrong user id or password"  # the same words whether the id exists or not
        if user is None:
            raise AccessRefusedError(
                refused, [("", self._event(probe, "login", allowed=False, detail="unknown user id", now=now))]
            )
        if user.disabled:
            raise AccessRefusedError(
                "this account is disabled",
                [("", self._event(probe, "login", allowed=False, detail="account disabled", now=now))],
            )
        if user.locked_until > now:
            detail = f"account locked after {self._config.login_failures_max} wrong passwords"
            return_in = f"{(user.locked_until - now) / 60:.0f} min"
            raise AccessRefusedError(
                f"{detail}; try again in {return_in}",
                [("", self._event(probe, "login", allowed=False, detail=detail, severity="high", now=now))],
            )
        if not verify_secret(user.password_hash, password):
            failures = user.failures + 1
            locked = failures >= self._config.login_failures_max
            self._put_user(
                msgspec.structs.replace(
                    user,
                    failures=0 if locked else failures,
                    locked_until=now + self._config.login_lockout_s if locked else user.locked_until,
                )
            )
            detail = f"wrong password ({failures} in a row)" + ("; account locked" if locked else "")
            event = self._event(
                probe, "login", allowed=False, detail=detail, severity="high" if locked else "", now=now
            )
            raise AccessRefusedError(refused, [("", event)])
        if user.failures:
            self._put_user(msgspec.structs.replace(user, failures=0))
        token = new_token()
        session = SessionRecord(uuid.uuid4().hex, token_digest(token), user.id, setting, device, now, now)
        self._save(session)
        roles = ",".join(r.value for r in user.roles)
        return Login(token, session, [("", self._event(session, "login", allowed=True, role=roles, now=now))])

    def _save(self, session: SessionRecord) -> None:
        """Durably: a new session, a logout, an end, an unlock."""
        self._store.put_session(session)
        self._sessions[session.token_hash] = session
        self._dirty.discard(session.token_hash)

    def _remember(self, session: SessionRecord) -> None:
        """In memory now, on disk at the next `flush`: the request path never waits for a disk write.

        Only activity, context and an idle lock are deferred; a crash before the
        flush can only make a session look idle sooner (it locks early).
        """
        self._sessions[session.token_hash] = session
        self._dirty.add(session.token_hash)

    def _session(self, credentials: Credentials, action: str, now: float) -> SessionRecord:
        """The session these credentials name, whatever its state; refusals are audited."""
        if not credentials.token:
            first = (
                " (there is no account yet: add the first administrator with `vigil user add ID --role administrator`)"
            )
            raise AccessRefusedError(
                f"no session: log in with `vigil login`{first if self.needs_bootstrap() else ''}",
                [("", self._event(None, action, allowed=False, detail="no session", now=now))],
            )
        digest = token_digest(credentials.token)
        session = self._sessions.get(digest) or self._store.session_by_token(digest)
        if session is None:
            event = self._event(None, action, allowed=False, detail="unknown or forged token", severity="high", now=now)
            raise AccessRefusedError("not a valid session token: log in again", [("", event)])
        self._sessions[digest] = session
        if credentials.device != session.device:
            detail = "token presented from another device"
            event = self._event(session, action, allowed=False, detail=detail, severity="high", now=now)
            raise AccessRefusedError(f"{detail}: log in on this device", [("", event)])
        return session

    def _active(self, credentials: Credentials, action: str, patient: str, now: float) -> tuple[SessionRecord, User]:
        session = self._session(credentials, action, now)
        state, why = session_state(session, self._config, now)
        if state is SessionState.LOCKED and not session.locked:
            session = msgspec.structs.replace(session, locked=True)  # an idle lock holds until the PIN
            self._remember(session)
        if state is SessionState.ACTIVE:
            user = self._user(session.user)
            if user is None or user.disabled:
                self._remember(msgspec.structs.replace(session, ended_at=now, end_reason="user disabled"))
                state, why = SessionState.ENDED, "session ended (user disabled)"
            else:
                return session, user
        raise AccessRefusedError(why, [(patient, self._event(session, action, allowed=False, detail=why, now=now))])

    def authorize(
        self,
        credentials: Credentials,
        permission: Permission,
        *,
        patient: str = "",
        action: str = "",
        passive: bool = False,
    ) -> Access:
        """Allow a request or raise `AccessRefusedError`; an allowed PHI read is audited and kept in the context.

        `passive`: a screen refreshing itself (`vigil top`), not the person: it does
        not count as activity, so it cannot keep an unattended session from locking.
        """
        now = self._clock()
        action = action or permission.value
        session, user = self._active(credentials, action, patient, now)
        grants = self._grants_of(session.id) if permission not in self._role_permissions(user) else []
        decision = decide(user, permission, patient=patient, grants=grants, config=self._config, now=now)
        if not decision.allowed:
            event = self._event(session, action, allowed=False, role=decision.role, detail=decision.reason, now=now)
            raise AccessRefusedError(decision.reason, [(patient, event)])
        if not passive:
            session = self._touch(session, now, patient=patient, action=action)
        audit: list[AuditItem] = []
        if permission in PHI_PERMISSIONS:
            grant = next((g for g in grants if g.id == decision.grant), None)
            reason = grant.reason if grant else ""
            audit.append(
                (patient, self._event(session, action, allowed=True, role=decision.role, reason=reason, now=now))
            )
        return Access(session, user, decision, audit)

    def _role_permissions(self, user: User) -> frozenset[Permission]:
        return frozenset().union(*(self._config.permissions.get(r, frozenset()) for r in user.roles))

    def accessed(self, access: Access, action: str, patients: list[str]) -> list[AuditItem]:
        """One audit event per patient shown by a request that lists many (a worklist, a log)."""
        now = self._clock()
        event = self._event(access.session, action, allowed=True, role=access.decision.role, now=now)
        return [(p, event) for p in dict.fromkeys(patients) if p]

    def _touch(self, session: SessionRecord, now: float, *, patient: str, action: str) -> SessionRecord:
        context = dict(session.context)
        if patient:
            queries = [q for q in _list(context.get("queries")) if q != [action, patient]]
            context["patient"] = patient
            context["queries"] = [*queries, [action, patient]][-_QUERIES_KEPT:]
        session = msgspec.structs.replace(session, last_seen_at=now, context=context)
        self._remember(session)
        return session

    def flush(self) -> None:
        """Write the sessions changed in memory since the last flush (the node does it every few seconds)."""
        for digest in list(self._dirty):
            # Off the dirty set before the read: activity the event loop adds meanwhile marks it again.
            self._dirty.discard(digest)
            session = self._sessions.get(digest)
            if session is not None:
                self._store.put_session(session)
        # Ended sessions leave memory (the store still refuses their tokens): the cache stays the live ones.
        now = self._clock()
        for digest, session in list(self._sessions.items()):
            if digest not in self._dirty and session_state(session, self._config, now)[0] is SessionState.ENDED:
                self._sessions.pop(digest, None)
                self._grants.pop(session.id, None)

    def whoami(self, credentials: Credentials) -> tuple[SessionRecord, SessionState, str]:
        """The session and its state (no audit: it shows no PHI, and a locked session may ask)."""
        now = self._clock()
        session = self._session(credentials, "whoami", now)
        state, why = session_state(session, self._config, now)
        return session, state, why

    def lock(self, credentials: Credentials) -> list[AuditItem]:
        now = self._clock()
        session = self._session(credentials, "lock", now)
        state, why = session_state(session, self._config, now)
        if state is SessionState.ENDED:
            raise AccessRefusedError(why, [])
        self._save(msgspec.structs.replace(session, locked=True))
        return [("", self._event(session, "lock", allowed=True, now=now))]

    def unlock(self, credentials: Credentials, pin: str) -> tuple[SessionRecord, list[AuditItem]]:
        """Resume a locked session with the PIN: its context (patient, last queries) is as it was."""
        now = self._clock()
        session = self._session(credentials, "unlock", now)
        state, why = session_state(session, self._config, now)
        if state is SessionState.ENDED:
            raise AccessRefusedError(why, [("", self._event(session, "unlock", allowed=False, detail=why, now=now))])
        user = self._store.user(session.user)
        if user is None or user.disabled:
            self._save(msgspec.structs.replace(session, ended_at=now, end_reason="user disabled"))
            raise AccessRefusedError(
                "this account is disabled",
                [("", self._event(session, "unlock", allowed=False, detail="account disabled", now=now))],
            )
        if not verify_secret(user.pin_hash, pin):
            failures = session.pin_failures + 1
            ended = failures >= self._config.pin_failures_max
            changed = msgspec.structs.replace(session, pin_failures=failures, locked=True)
            if ended:
                changed = msgspec.structs.replace(changed, ended_at=now, end_reason=f"{failures} wrong PINs")
            self._save(changed)
            detail = f"wrong PIN ({failures} in a row)" + ("; session ended" if ended else "")
            event = self._event(
                session, "unlock", allowed=False, detail=detail, severity="high" if ended else "", now=now
            )
            message = "wrong PIN; the session has ended: log in again" if ended else "wrong PIN"
            raise AccessRefusedError(message, [("", event)])
        resumed = msgspec.structs.replace(session, locked=False, pin_failures=0, last_seen_at=now)
        self._save(resumed)
        roles = ",".join(r.value for r in user.roles)
        return resumed, [("", self._event(resumed, "unlock", allowed=True, role=roles, now=now))]

    def change_secrets(
        self, credentials: Credentials, current_password: str, *, password: str = "", pin: str = ""
    ) -> list[AuditItem]:
        """A user sets their own password and/or PIN: proven by the current password; other sessions end."""
        now = self._clock()
        session, user = self._active(credentials, "secrets_change", "", now)

        def refuse(why: str, severity: str = "") -> AccessRefusedError:
            event = self._event(session, "secrets_change", allowed=False, detail=why, severity=severity, now=now)
            return AccessRefusedError(why, [("", event)])

        if not verify_secret(user.password_hash, current_password):
            raise refuse("the current password is wrong", "high")
        problems = [p for p in (password and check_password_rules(password), pin and check_pin_rules(pin)) if p]
        if problems or not (password or pin):
            raise refuse("; ".join(problems) or "give a new password, a new PIN, or both")
        changed = msgspec.structs.replace(
            user,
            password_hash=hash_secret(password) if password else user.password_hash,
            pin_hash=hash_secret(pin) if pin else user.pin_hash,
        )
        self._put_user(changed)
        self._end_sessions(user.id, "secrets changed", now, keep=session.id)
        what = " and ".join(w for w, new in (("password", password), ("PIN", pin)) if new)
        roles = ",".join(r.value for r in user.roles)
        return [
            ("", self._event(session, "secrets_change", allowed=True, role=roles, detail=f"{what} changed", now=now))
        ]

    def logout(self, credentials: Credentials) -> list[AuditItem]:
        """End the session: its token is refused from now on (a replay too)."""
        now = self._clock()
        session = self._session(credentials, "logout", now)
        if session.ended_at:
            return []
        self._save(msgspec.structs.replace(session, ended_at=now, end_reason="logged out"))
        return [("", self._event(session, "logout", allowed=True, now=now))]

    # -- break-the-glass -------------------------------------------------------------------

    def break_glass(
        self, credentials: Credentials, patient: str, reason: str, note: str, secret: str
    ) -> tuple[Grant, list[AuditItem]]:
        """Emergency access to one patient for a limited time: re-authenticated, coded, audited, reviewed.

        The re-authentication is the password; in the emergency department the PIN
        is enough (speed matters most there, and the session is already the user's).
        """
        now = self._clock()
        session, user = self._active(credentials, "break_glass", patient, now)

        def refuse(why: str) -> AccessRefusedError:
            event = self._event(
                session, "break_glass", allowed=False, reason=reason, detail=why, severity="high", now=now
            )
            return AccessRefusedError(why, [(patient, event)])

        role = self._config.allowed(user.roles, Permission.BREAK_GLASS)
        if role is None:
            raise refuse(f"role {','.join(r.value for r in user.roles)} may not break the glass")
        if not patient:
            raise refuse("break-the-glass needs the patient it is for")
        if reason not in self._config.break_glass_reasons:
            raise refuse(f"break-the-glass needs a reason code: one of {', '.join(self._config.break_glass_reasons)}")
        emergency = session.setting is Setting.EMERGENCY_DEPARTMENT
        if not (verify_secret(user.password_hash, secret) or (emergency and verify_secret(user.pin_hash, secret))):
            raise refuse("re-authentication failed" + (" (PIN or password)" if emergency else " (password)"))
        grant = Grant(
            uuid.uuid4().hex[:12],
            session.id,
            user.id,
            patient,
            reason,
            note,
            now,
            now + self._config.break_glass_window_s,
        )
        review = Review(uuid.uuid4().hex[:12], grant.id, user.id, patient, reason, note, now)
        self._store.add_grant(grant, review)
        self._grants.setdefault(session.id, []).append(grant)
        self._touch(session, now, patient=patient, action="break_glass")
        detail = f"{self._config.break_glass_window_s / 60:g} min; review {review.id}" + (
            f"; note: {note}" if note else ""
        )
        event = self._event(
            session,
            "break_glass",
            allowed=True,
            role=role.value,
            reason=reason,
            detail=detail,
            severity="high",
            now=now,
        )
        return grant, [(patient, event)]

    def reviews(self, *, open_only: bool) -> list[Review]:
        return self._store.reviews(open_only=open_only)

    def statistics(self) -> dict[str, int]:
        """What `vigil status` shows of authentication: counts only, no names, no patients."""
        now = self._clock()
        states = [session_state(s, self._config, now)[0] for s in list(self._sessions.values())]
        return {
            "sessions_active": sum(1 for s in states if s is SessionState.ACTIVE),
            "sessions_locked": sum(1 for s in states if s is SessionState.LOCKED),
            "break_glass_reviews_open": len(self._store.reviews(open_only=True)),
        }

    def close_review(self, by: Access, review_id: str, outcome: str, note: str) -> tuple[Review, list[AuditItem]]:
        now = self._clock()
        review = self._store.review(review_id)
        if review is None:
            raise AccessRefusedError(f"no review {review_id}", [])
        if review.reviewed_at:
            raise AccessRefusedError(f"review {review_id} was closed by {review.reviewed_by} already", [])
        if outcome not in ("appropriate", "inappropriate"):
            raise AccessRefusedError("the outcome is appropriate or inappropriate", [])
        closed = msgspec.structs.replace(
            review, reviewed_by=by.user.id, reviewed_at=now, outcome=outcome, review_note=note
        )
        self._store.put_review(closed)
        return closed, [(review.patient, self.done_by(by, "audit_review", f"review {review_id}: {outcome}", now))]


def _user_id_problem(user_id: str) -> str | None:
    if not (1 <= len(user_id) <= 64) or not all(c.isalnum() or c in "._-@" for c in user_id):
        return "a user id is 1 to 64 letters, digits or . _ - @"
    return None


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []
