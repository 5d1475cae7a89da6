"""Who may do what, and for how long: roles, permissions, clinical settings and their defaults.

Pure (no I/O). `config.toml`'s `[auth]` and `[workstation]` tables decode into
these Structs; unknown roles, permissions or settings are refused at load.

The defaults, and why:
- Idle lock by setting: 5 min in the emergency department and intensive care
  (shared terminals in busy public spaces), 10 min on a ward and in the pharmacy,
  15 min in an office or at the operator console (a private desk). A lock keeps the
  session (PIN to resume); only the absolute limit, 12 h (a long shift), ends it.
- Break-the-glass lasts 60 minutes: long enough for an emergency, short enough
  that a forgotten grant does not become standing access.
- Five wrong passwords lock an account for 15 minutes; three wrong PINs end the
  session (a PIN is short: it is only safe with few tries).
- An integration operator sees lanes, throughput and quarantine metadata, never a
  message's content or a record unless they break the glass for one patient.
"""

from __future__ import annotations

import enum
from typing import Annotated, Final, final

import msgspec

__all__ = [
    "DEFAULT_PERMISSIONS",
    "PATIENT_SCOPED",
    "AuthConfig",
    "IdleTimeouts",
    "Permission",
    "Role",
    "Setting",
    "WorkstationConfig",
]


class Role(enum.Enum):
    CLINICIAN = "clinician"
    PHARMACIST = "pharmacist"
    OPERATOR = "integration_operator"
    PRIVACY_OFFICER = "privacy_officer"
    ADMINISTRATOR = "administrator"


class Permission(enum.Enum):
    STATUS_READ = "status.read"  # lanes, throughput, actors: no PHI
    RECORD_READ = "record.read"  # a patient's record
    WORKLIST_READ = "worklist.read"  # the open critical results
    RESULT_ACKNOWLEDGE = "result.acknowledge"
    LOG_METADATA = "log.metadata"  # LSN, lane, type, event kinds: no content
    LOG_CONTENT = "log.content"  # events and original bytes
    QUARANTINE_METADATA = "quarantine.metadata"  # id, time, source, reason
    QUARANTINE_CONTENT = "quarantine.content"  # the refused bytes
    QUARANTINE_RETRY = "quarantine.retry"  # retry an item, or resend it edited
    QUARANTINE_RESOLVE = "quarantine.resolve"  # discard an item, or mark it resolved, with a reason
    BREAK_GLASS = "break_glass"
    AUDIT_READ = "audit.read"  # who looked at which record; exports
    AUDIT_REVIEW = "audit.review"  # close break-the-glass reviews
    USER_MANAGE = "user.manage"
    READ_SIDE_MANAGE = "read_side.manage"  # migrate, rebuild projections
    ROUTES_MANAGE = "routes.manage"  # pause, resume; retry or skip a refused delivery
    DATA_BACKUP = "data.backup"  # a copy of the whole data directory: every record


# Permissions that a break-the-glass grant gives, for its one patient only.
PATIENT_SCOPED: Final = frozenset(
    {Permission.RECORD_READ, Permission.LOG_CONTENT, Permission.QUARANTINE_CONTENT, Permission.RESULT_ACKNOWLEDGE}
)


class Setting(enum.Enum):
    """Where the workstation is: it sets how soon an idle session locks."""

    EMERGENCY_DEPARTMENT = "emergency_department"
    INTENSIVE_CARE = "intensive_care"
    WARD = "ward"
    PHARMACY = "pharmacy"
    OFFICE = "office"
    OPERATOR_CONSOLE = "operator_console"


_P = Permission
DEFAULT_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    Role.CLINICIAN: frozenset(
        {_P.STATUS_READ, _P.RECORD_READ, _P.WORKLIST_READ, _P.RESULT_ACKNOWLEDGE, _P.LOG_METADATA, _P.BREAK_GLASS}
    ),
    Role.PHARMACIST: frozenset({_P.STATUS_READ, _P.RECORD_READ, _P.LOG_METADATA, _P.BREAK_GLASS}),
    Role.OPERATOR: frozenset(
        {
            _P.STATUS_READ,
            _P.LOG_METADATA,
            _P.QUARANTINE_METADATA,
            _P.QUARANTINE_RETRY,
            _P.QUARANTINE_RESOLVE,
            _P.READ_SIDE_MANAGE,
            _P.ROUTES_MANAGE,
            _P.BREAK_GLASS,
        }
    ),
    Role.PRIVACY_OFFICER: frozenset({_P.STATUS_READ, _P.AUDIT_READ, _P.AUDIT_REVIEW, _P.LOG_METADATA}),
    Role.ADMINISTRATOR: frozenset(
        {_P.STATUS_READ, _P.USER_MANAGE, _P.READ_SIDE_MANAGE, _P.LOG_METADATA, _P.DATA_BACKUP}
    ),
}

_Seconds = Annotated[float, msgspec.Meta(gt=0, le=7 * 24 * 3600)]


@final
class IdleTimeouts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Seconds without activity before a session locks, by clinical setting."""

    emergency_department: _Seconds = 300.0
    intensive_care: _Seconds = 300.0
    ward: _Seconds = 600.0
    pharmacy: _Seconds = 600.0
    office: _Seconds = 900.0
    operator_console: _Seconds = 900.0

    def of(self, setting: Setting) -> float:
        seconds: float = getattr(self, setting.value)
        return seconds


_REASONS: Final = (
    "emergency_treatment",  # HL7 v3 ActReason ETREAT
    "patient_unconscious",
    "urgent_medication",
    "continuity_of_care",  # covering for the treating clinician
    "message_investigation",  # an operator must read one stuck or refused message
)


@final
class AuthConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[auth]`: timeouts, break-the-glass, login limits and the permission matrix."""

    idle_timeout_s: IdleTimeouts = IdleTimeouts()
    absolute_timeout_s: _Seconds = 12 * 3600.0
    break_glass_window_s: _Seconds = 3600.0
    break_glass_reasons: tuple[str, ...] = _REASONS
    login_failures_max: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    login_lockout_s: _Seconds = 900.0
    pin_failures_max: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    # A session's last activity reaches the disk this often (never on the request's
    # path): a crash can only make a session look idle sooner (it locks early).
    activity_persist_interval_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    # The setting of a browser on a device no administrator registered (`vigil workstation register`):
    # the strictest by default, so an unknown screen locks soonest.
    unregistered_setting: Setting = Setting.EMERGENCY_DEPARTMENT
    permissions: dict[Role, frozenset[Permission]] = msgspec.field(default_factory=lambda: dict(DEFAULT_PERMISSIONS))

    def allowed(self, roles: tuple[Role, ...], permission: Permission) -> Role | None:
        """The first of `roles` that has `permission`, or None."""
        return next((r for r in roles if permission in self.permissions.get(r, frozenset())), None)


@final
class WorkstationConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[workstation]`: where this CLI runs. Sessions are bound to the setting and the device."""

    setting: Setting = Setting.OPERATOR_CONSOLE
    device: str = ""  # empty: the host's name
    # A node's admin endpoint over TLS (HOST:PORT, its `[admin] listen`); empty: the
    # node on this machine's data directory, over its Unix socket.
    node: str = ""
    tls_ca_file: str = ""  # the CA that signed the node's certificate (else the system's CAs)
    tls_cert_file: str = ""  # this workstation's certificate, where the node asks for one
    tls_key_file: str = ""
