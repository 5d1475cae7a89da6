"""API clients: scopes read strictly, tokens kept only as hashes, every refusal and every PHI read audited."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.auth import (
    CLIENT_ROLE,
    AccessRefusedError,
    ApiClients,
    AuthConfig,
    AuthService,
    AuthStore,
    Credentials,
    Permission,
    Role,
    ScopeRefusedError,
    Setting,
    allows,
    parse_scopes,
)

PASSWORD = "correct horse battery"
PIN = "4321"
T0 = 1_800_000_000.0


@pytest.fixture
def service(tmp_path: Path) -> AuthService:
    auth = AuthService(AuthStore(tmp_path), AuthConfig(), clock=lambda: T0)
    auth.add_user(None, "admin", name="Admin", roles=(Role.ADMINISTRATOR,), password=PASSWORD, pin=PIN)
    return auth


def _clients(service: AuthService) -> tuple[ApiClients, object]:
    login = service.login("admin", PASSWORD, Setting.OFFICE, "ws-1")
    admin = service.authorize(Credentials(login.token, "ws-1"), Permission.USER_MANAGE)
    return ApiClients(service.store, service.clock, service.done_by), admin


@pytest.mark.parametrize(
    ("scope", "rtype", "mode", "allowed"),
    [
        ("system/Observation.read", "Observation", "read", True),
        ("system/Observation.read", "Observation", "write", False),
        ("system/Observation.read", "Patient", "read", False),
        ("system/*.read", "Encounter", "read", True),
        ("system/*.read", "*", "read", True),
        ("system/Patient.*", "Patient", "write", True),
        ("system/Patient.write", "*", "write", False),  # HL7 v2 (any type) needs system/*.write
        ("system/*.*", "*", "write", True),
    ],
)
def test_scopes_allow_what_they_name_and_no_more(scope: str, rtype: str, mode: str, allowed: bool) -> None:
    assert allows(parse_scopes([scope]), rtype, mode) is allowed  # type: ignore[arg-type]


@given(st.text(max_size=30).filter(lambda t: not t.strip().startswith("system/")))
def test_anything_that_is_not_a_scope_is_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match="is not a scope") as refused:
        parse_scopes([text])
    assert repr(text.strip()) in str(refused.value)


def test_a_client_is_added_shown_its_token_once_and_revoked_at_once(service: AuthService, tmp_path: Path) -> None:
    clients, admin = _clients(service)
    token, audit = clients.add(admin, "lab-app", ["system/Observation.read", "system/*.write"], 90)  # type: ignore[arg-type]
    assert [(p, e.action, e.user) for p, e in audit] == [("", "client_add", "admin")]
    assert token.encode() not in (tmp_path / "auth.db").read_bytes()  # only its SHA-256 is kept

    client, audit = clients.authorize(token, "Observation", "read", patients=["H|1", "H|2", "H|1"], action="fhir_read")
    assert client.id == "lab-app"
    assert [(p, e.user, e.role, e.outcome) for p, e in audit] == [
        ("H|1", "client:lab-app", CLIENT_ROLE, "allowed"),
        ("H|2", "client:lab-app", CLIENT_ROLE, "allowed"),
    ]
    assert clients.authorize(token, "*", "write", action="hl7v2_in")[1] == []  # writes: the log names the source

    with pytest.raises(ScopeRefusedError) as scope:
        clients.authorize(token, "Patient", "read", patients=["H|1"], action="fhir_read")
    assert "system/Patient.read" in scope.value.reason
    assert [(p, e.outcome) for p, e in scope.value.audit] == [("H|1", "denied")]

    clients.revoke(admin, "lab-app")  # type: ignore[arg-type]
    with pytest.raises(AccessRefusedError) as revoked:
        clients.authorize(token, "Observation", "read", patients=["H|1"], action="fhir_read")
    assert not isinstance(revoked.value, ScopeRefusedError)
    assert revoked.value.reason == "unknown or revoked token"
    assert [c.revoked_by for c in clients.listed()] == ["admin"]


def test_a_client_name_is_never_reused_and_a_bad_name_or_scope_is_refused(service: AuthService) -> None:
    clients, admin = _clients(service)
    clients.add(admin, "pharmacy", ["system/*.read"], 90)  # type: ignore[arg-type]
    for name, scopes, said in (
        ("pharmacy", ["system/*.read"], "exists already"),
        ("bad name", ["system/*.read"], "cannot name a client"),
        ("ok", ["patient/*.read"], "is not a scope"),
        ("ok", [], "at least one scope"),
    ):
        with pytest.raises(AccessRefusedError) as refused:
            clients.add(admin, name, scopes, 90)  # type: ignore[arg-type]
        assert said in refused.value.reason


def test_no_token_or_an_unknown_one_is_refused_and_audited(service: AuthService) -> None:
    clients, _admin = _clients(service)
    for token, said in (("", "a bearer token is needed"), ("vgc_guess", "unknown or revoked token")):
        with pytest.raises(AccessRefusedError) as refused:
            clients.authorize(token, "Observation", "read", patients=["H|1"], action="fhir_read")
        assert refused.value.reason == said
        assert [(e.user, e.outcome) for _p, e in refused.value.audit] == [("client:unknown", "denied")]


def test_a_token_is_known_in_memory_once_seen_and_forgotten_when_revoked(service: AuthService) -> None:
    """Only a token already seen is decided without the store (the node decides the others off its loop)."""
    clients, admin = _clients(service)
    token, _ = clients.add(admin, "lab-app", ["system/*.read"], 90)  # type: ignore[arg-type]
    assert not clients.known(token)
    clients.authorize(token, "Observation", "read", patients=["H|1"], action="fhir_read")
    assert clients.known(token)
    clients.revoke(admin, "lab-app")  # type: ignore[arg-type]
    assert not clients.known(token)
    assert not clients.known("vgc_guess")


def test_a_token_lasts_its_days_then_is_refused_until_rotated_and_the_old_one_never_again(tmp_path: Path) -> None:
    now = [T0]
    service = AuthService(AuthStore(tmp_path), AuthConfig(), clock=lambda: now[0])
    service.add_user(None, "admin", name="Admin", roles=(Role.ADMINISTRATOR,), password=PASSWORD, pin=PIN)
    clients, admin = _clients(service)
    old, _ = clients.add(admin, "lab-app", ["system/*.read"], 30)  # type: ignore[arg-type]
    clients.authorize(old, "Observation", "read", action="fhir_read")  # in memory from here on
    now[0] = T0 + 30 * 86_400 - 1
    clients.authorize(old, "Observation", "read", action="fhir_read")
    now[0] = T0 + 30 * 86_400
    with pytest.raises(AccessRefusedError) as expired:
        clients.authorize(old, "Observation", "read", action="fhir_read")
    assert expired.value.reason == "the token of client lab-app expired on 2027-02-14: rotate it"
    assert [(e.user, e.outcome) for _p, e in expired.value.audit] == [("client:lab-app", "denied")]

    login = service.login("admin", PASSWORD, Setting.OFFICE, "ws-1")  # the first session has ended by now
    admin = service.authorize(Credentials(login.token, "ws-1"), Permission.USER_MANAGE)
    new, audit = clients.rotate(admin, "lab-app", 90)
    assert [e.action for _p, e in audit] == ["client_rotate"]
    client, _ = clients.authorize(new, "Observation", "read", action="fhir_read")
    assert client.expires_at == now[0] + 90 * 86_400
    with pytest.raises(AccessRefusedError, match="unknown or revoked token"):
        clients.authorize(old, "Observation", "read", action="fhir_read")
    [listed] = clients.listed()
    assert listed.rotated_at == now[0]


@pytest.mark.parametrize("days", [0, -1, 731])
def test_a_lifetime_outside_one_day_to_two_years_is_refused(service: AuthService, days: int) -> None:
    clients, admin = _clients(service)
    with pytest.raises(AccessRefusedError, match="a token lasts 1 to 730 days"):
        clients.add(admin, "lab-app", ["system/*.read"], days)  # type: ignore[arg-type]


def test_a_revoked_client_is_not_rotated(service: AuthService) -> None:
    clients, admin = _clients(service)
    clients.add(admin, "lab-app", ["system/*.read"], 90)  # type: ignore[arg-type]
    clients.revoke(admin, "lab-app")  # type: ignore[arg-type]
    with pytest.raises(AccessRefusedError, match="is revoked: add a new client"):
        clients.rotate(admin, "lab-app", 90)  # type: ignore[arg-type]
