"""Context-aware authentication, break-the-glass access and the PHI access audit (invariant 7).

`settings` (roles, permissions, clinical settings, defaults) and `policy`
(session states and decisions on a given `now`) are pure; `store` keeps
accounts and sessions in SQLite in the data directory; `service` is the one
door every request goes through; `audit_events` writes accesses to the log and
reads them back as FHIR AuditEvent.
"""

from typing import TYPE_CHECKING, Any

from engine.auth.api_clients import CLIENT_ROLE, ApiClients, ScopeRefusedError
from engine.auth.audit_events import AUDIT_MESSAGE_TYPE, audit_envelope, fhir_audit_event
from engine.auth.clients import SCOPE_RULE, TOKEN_DAYS_DEFAULT, TOKEN_DAYS_MAX, ApiClient, Mode, allows, parse_scopes
from engine.auth.hashing import hash_secret, token_digest
from engine.auth.policy import Decision, Grant, Review, SessionRecord, SessionState, User
from engine.auth.service import Access, AccessRefusedError, AuditItem, AuthService, Credentials, Login
from engine.auth.settings import AuthConfig, Permission, Role, Setting, WorkstationConfig
from engine.auth.store import STORE_FILE, AuthStore
from engine.auth.workstations import Workstation

if TYPE_CHECKING:
    from engine.auth.endpoint import OPERATIONS, AuthEndpoint


def __getattr__(name: str) -> Any:
    """The admin socket's session requests, loaded on first use.

    `endpoint` stands on the log and the admin socket, and the configuration
    (which the log reads) imports this package's settings: loading it eagerly
    would make that a cycle.
    """
    if name in {"OPERATIONS", "AuthEndpoint"}:
        from engine.auth import endpoint  # noqa: PLC0415 -- lazy on purpose (above)

        return getattr(endpoint, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AUDIT_MESSAGE_TYPE",
    "CLIENT_ROLE",
    "OPERATIONS",
    "SCOPE_RULE",
    "STORE_FILE",
    "TOKEN_DAYS_DEFAULT",
    "TOKEN_DAYS_MAX",
    "Access",
    "AccessRefusedError",
    "ApiClient",
    "ApiClients",
    "AuditItem",
    "AuthConfig",
    "AuthEndpoint",
    "AuthService",
    "AuthStore",
    "Credentials",
    "Decision",
    "Grant",
    "Login",
    "Mode",
    "Permission",
    "Review",
    "Role",
    "ScopeRefusedError",
    "SessionRecord",
    "SessionState",
    "Setting",
    "User",
    "Workstation",
    "WorkstationConfig",
    "allows",
    "audit_envelope",
    "fhir_audit_event",
    "hash_secret",
    "parse_scopes",
    "token_digest",
]
