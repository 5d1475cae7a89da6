"""Sessions, grants and decisions: what is allowed now. Pure (no I/O, no clock: `now` is given).

Times are seconds since the epoch (UTC). The service (`engine.auth.service`)
loads and stores these Structs; every decision is a function of them and `now`,
so the timeouts are tested on deterministic time.
"""

from __future__ import annotations

import enum
from typing import final

import msgspec

from engine.auth.settings import PATIENT_SCOPED, AuthConfig, Permission, Role, Setting

__all__ = ["Decision", "Grant", "Review", "SessionRecord", "SessionState", "User", "decide", "session_state"]


@final
class User(msgspec.Struct, frozen=True):
    """An account: a unique id for one person (no shared accounts), never a secret in clear."""

    id: str
    name: str
    roles: tuple[Role, ...]
    password_hash: str
    pin_hash: str
    disabled: bool = False
    failures: int = 0  # consecutive wrong passwords
    locked_until: float = 0.0


@final
class SessionRecord(msgspec.Struct, frozen=True):
    """One login: bound to the user, the clinical setting and the device.

    The token itself is never kept: only its SHA-256 (`token_hash`), so a copy
    of the store does not let anyone act as the session.
    """

    id: str
    token_hash: str
    user: str
    setting: Setting
    device: str
    created_at: float
    last_seen_at: float
    locked: bool = False
    ended_at: float = 0.0
    end_reason: str = ""
    pin_failures: int = 0
    context: dict[str, object] = msgspec.field(default_factory=dict)


@final
class Grant(msgspec.Struct, frozen=True):
    """Break-the-glass: one session may read one patient until `expires_at`."""

    id: str
    session: str
    user: str
    patient: str
    reason: str
    note: str
    granted_at: float
    expires_at: float


@final
class Review(msgspec.Struct, frozen=True):
    """A break-the-glass access awaiting a privacy officer's review; open until reviewed."""

    id: str
    grant: str
    user: str
    patient: str
    reason: str
    note: str
    opened_at: float
    reviewed_by: str = ""
    reviewed_at: float = 0.0
    outcome: str = ""  # "appropriate" or "inappropriate"
    review_note: str = ""


class SessionState(enum.Enum):
    ACTIVE = "active"
    LOCKED = "locked"  # idle too long, or locked by the user: the PIN resumes it
    ENDED = "ended"  # logged out, revoked, or past the absolute limit: log in again


def session_state(session: SessionRecord, config: AuthConfig, now: float) -> tuple[SessionState, str]:
    """The session's state at `now` and, unless active, why."""
    if session.ended_at:
        return SessionState.ENDED, f"session ended ({session.end_reason})"
    if now - session.created_at >= config.absolute_timeout_s:
        return SessionState.ENDED, f"session ended (over the {config.absolute_timeout_s / 3600:g} h limit)"
    if session.locked:
        return SessionState.LOCKED, "session locked: resume it with `vigil unlock` (PIN)"
    idle = config.idle_timeout_s.of(session.setting)
    if now - session.last_seen_at >= idle:
        minutes = f"{idle / 60:g} min"
        return SessionState.LOCKED, f"session locked after {minutes} idle: resume it with `vigil unlock` (PIN)"
    return SessionState.ACTIVE, ""


@final
class Decision(msgspec.Struct, frozen=True):
    """Allowed or not, why, and as which role (or through which grant)."""

    allowed: bool
    reason: str
    role: str = ""
    grant: str = ""  # the break-the-glass grant that allowed it


def decide(
    user: User,
    permission: Permission,
    *,
    patient: str,
    grants: list[Grant],
    config: AuthConfig,
    now: float,
) -> Decision:
    """May this (active, enabled) user do `permission`, on `patient` where it names one?"""
    role = config.allowed(user.roles, permission)
    roles = ",".join(r.value for r in user.roles)
    if role is not None:
        return Decision(True, "", role.value)
    if permission not in PATIENT_SCOPED:
        return Decision(False, f"role {roles} may not {permission.value}", roles)
    if not patient:
        return Decision(False, f"role {roles} may not {permission.value} without break-the-glass for a patient", roles)
    mine = [g for g in grants if g.patient == patient]
    live = [g for g in mine if g.granted_at <= now < g.expires_at]
    if live:
        return Decision(True, f"break-the-glass: {live[0].reason}", roles, live[0].id)
    if mine:
        return Decision(False, "the break-the-glass window for this patient has ended", roles)
    if any(g.granted_at <= now < g.expires_at for g in grants):
        return Decision(False, "break-the-glass was granted for another patient", roles)
    return Decision(False, f"role {roles} may not {permission.value}: break the glass with a reason", roles)
