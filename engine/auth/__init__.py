"""Context-aware authentication, break-the-glass access and the PHI access audit (invariant 7).

`settings` (roles, permissions, clinical settings, defaults) and `policy`
(session states and decisions on a given `now`) are pure; `store` keeps
accounts and sessions in SQLite in the data directory; `service` is the one
door every request goes through; `audit_events` writes accesses to the log and
reads them back as FHIR AuditEvent.
"""

from engine.auth.audit_events import audit_envelope, fhir_audit_event
from engine.auth.policy import Decision, Grant, Review, SessionRecord, SessionState, User
from engine.auth.service import Access, AccessRefusedError, AuditItem, AuthService, Credentials, Login
from engine.auth.settings import AuthConfig, Permission, Role, Setting, WorkstationConfig
from engine.auth.store import AuthStore

__all__ = [
    "Access",
    "AccessRefusedError",
    "AuditItem",
    "AuthConfig",
    "AuthService",
    "AuthStore",
    "Credentials",
    "Decision",
    "Grant",
    "Login",
    "Permission",
    "Review",
    "Role",
    "SessionRecord",
    "SessionState",
    "Setting",
    "User",
    "WorkstationConfig",
    "audit_envelope",
    "fhir_audit_event",
]
