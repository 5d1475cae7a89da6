"""Authentication, sessions and break-the-glass on deterministic time (a hand-driven clock, no sleeps).

Each refusal of the matrix is checked twice: the request is refused with a
clear reason, and the refusal is among the audit events owed to the log.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
from argon2 import PasswordHasher
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.auth import (
    AccessRefusedError,
    AuthConfig,
    AuthService,
    AuthStore,
    Credentials,
    Permission,
    Role,
    SessionState,
    Setting,
)
from engine.auth.service import AuditItem
from engine.core.errors import ConfigError
from engine.infra.config import decode_config

PASSWORD = "correct horse battery"
PIN = "4321"
T0 = 1_800_000_000.0
PATIENT = "GENHOSP|MRN42"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(tmp_path: Path, clock: Clock) -> AuthService:
    auth = AuthService(AuthStore(tmp_path), AuthConfig(), clock=clock)
    auth.add_user(None, "admin", name="Admin", roles=(Role.ADMINISTRATOR,), password=PASSWORD, pin=PIN)
    by = _login(auth, "admin", Setting.OPERATOR_CONSOLE)
    admin = auth.authorize(by, Permission.USER_MANAGE)
    for user, role in (
        ("dr.osei", Role.CLINICIAN),
        ("op.kim", Role.OPERATOR),
        ("po.diaz", Role.PRIVACY_OFFICER),
        ("rx.lee", Role.PHARMACIST),
    ):
        auth.add_user(admin, user, name=user, roles=(role,), password=PASSWORD, pin=PIN)
    return auth


def _login(auth: AuthService, user: str, setting: Setting = Setting.WARD, device: str = "ws-1") -> Credentials:
    login = auth.login(user, PASSWORD, setting, device)
    return Credentials(login.token, device)


def _refused(call: object, *args: object, **kwargs: object) -> tuple[str, list[AuditItem]]:
    assert callable(call)
    with pytest.raises(AccessRefusedError) as caught:
        call(*args, **kwargs)
    return caught.value.reason, caught.value.audit


def _denied(audit: list[AuditItem]) -> AuditItem:
    [item] = audit
    assert item[1].outcome == "denied"
    return item


def test_an_allowed_record_read_is_audited_with_who_role_setting_and_patient(service: AuthService) -> None:
    creds = _login(service, "dr.osei", Setting.INTENSIVE_CARE)
    access = service.authorize(creds, Permission.RECORD_READ, patient=PATIENT, action="record")
    [(patient, event)] = access.audit
    assert patient == PATIENT
    assert (event.user, event.role, event.setting, event.action, event.outcome, event.device) == (
        "dr.osei",
        "clinician",
        "intensive_care",
        "record",
        "allowed",
        "ws-1",
    )


def test_status_reads_are_not_audited_but_their_refusals_are(service: AuthService) -> None:
    creds = _login(service, "op.kim")
    assert service.authorize(creds, Permission.STATUS_READ).audit == []
    reason, audit = _refused(service.authorize, creds, Permission.USER_MANAGE)
    assert "may not user.manage" in reason
    _denied(audit)


@pytest.mark.parametrize(
    ("setting", "idle_s"),
    [
        (Setting.EMERGENCY_DEPARTMENT, 300),
        (Setting.INTENSIVE_CARE, 300),
        (Setting.WARD, 600),
        (Setting.PHARMACY, 600),
        (Setting.OFFICE, 900),
        (Setting.OPERATOR_CONSOLE, 900),
    ],
)
def test_a_session_locks_after_its_settings_idle_time_and_not_before(
    service: AuthService, clock: Clock, setting: Setting, idle_s: int
) -> None:
    creds = _login(service, "dr.osei", setting)
    clock.now += idle_s - 1
    service.authorize(creds, Permission.STATUS_READ)  # activity: the idle time starts again
    clock.now += idle_s - 1
    service.authorize(creds, Permission.STATUS_READ)
    clock.now += idle_s
    reason, audit = _refused(service.authorize, creds, Permission.RECORD_READ, patient=PATIENT)
    assert f"locked after {idle_s / 60:g} min idle" in reason
    assert _denied(audit)[0] == PATIENT
    assert service.whoami(creds)[1] is SessionState.LOCKED


def test_pin_resumes_a_locked_session_with_its_context_intact(service: AuthService, clock: Clock) -> None:
    creds = _login(service, "dr.osei", Setting.EMERGENCY_DEPARTMENT)
    service.authorize(creds, Permission.RECORD_READ, patient="GENHOSP|MRN1", action="record")
    service.authorize(creds, Permission.RECORD_READ, patient=PATIENT, action="record")
    clock.now += 301
    _refused(service.authorize, creds, Permission.RECORD_READ, patient=PATIENT)
    reason, _ = _refused(service.unlock, creds, "0000")
    assert reason == "wrong PIN"
    session, audit = service.unlock(creds, PIN)
    assert audit[0][1].action == "unlock"
    assert session.context["patient"] == PATIENT
    assert session.context["queries"] == [["record", "GENHOSP|MRN1"], ["record", PATIENT]]
    service.authorize(creds, Permission.RECORD_READ, patient=PATIENT)


def test_a_locked_session_stays_locked_even_if_time_runs_backwards_from_activity(
    service: AuthService, clock: Clock
) -> None:
    """An idle lock is recorded: a request just under the limit after the lock does not undo it."""
    creds = _login(service, "dr.osei")
    clock.now += 600
    _refused(service.authorize, creds, Permission.STATUS_READ)
    reason, _ = _refused(service.authorize, creds, Permission.STATUS_READ)
    assert "vigil unlock" in reason


def test_wrong_pins_end_the_session(service: AuthService, clock: Clock) -> None:
    creds = _login(service, "dr.osei")
    service.lock(creds)
    for _ in range(2):
        _refused(service.unlock, creds, "1111")
    reason, audit = _refused(service.unlock, creds, "1111")
    assert "session has ended" in reason
    assert audit[0][1].severity == "high"
    reason, _ = _refused(service.unlock, creds, PIN)
    assert "session ended (3 wrong PINs)" in reason


def test_a_session_ends_at_the_absolute_limit_even_when_active(service: AuthService, clock: Clock) -> None:
    creds = _login(service, "dr.osei", Setting.OFFICE)
    for _ in range(12 * 4 - 1):  # active every 15 minutes for 12 hours
        clock.now += 14 * 60
        service.authorize(creds, Permission.STATUS_READ)
    clock.now += 12 * 3600 - (12 * 4 - 1) * 14 * 60
    reason, audit = _refused(service.authorize, creds, Permission.STATUS_READ)
    assert "over the 12 h limit" in reason
    _denied(audit)
    reason, _ = _refused(service.unlock, creds, PIN)
    assert "ended" in reason


def test_sessions_survive_a_restart(tmp_path: Path, service: AuthService, clock: Clock) -> None:
    creds = _login(service, "dr.osei")
    service.authorize(creds, Permission.RECORD_READ, patient=PATIENT)
    service.flush()
    again = AuthService(AuthStore(tmp_path), AuthConfig(), clock=clock)
    assert again.statistics()["sessions_active"] == 2  # the admin's and this one, known before either is used
    clock.now += 60
    access = again.authorize(creds, Permission.RECORD_READ, patient=PATIENT)
    assert access.session.context["patient"] == PATIENT
    again.logout(creds)
    again.flush()  # an ended session leaves memory; its token is still refused from the store
    assert again.statistics()["sessions_active"] == 1
    reason, _ = _refused(again.authorize, creds, Permission.STATUS_READ)
    assert "session ended (logged out)" in reason


def test_with_no_account_yet_a_refusal_says_how_to_add_the_first_administrator(tmp_path: Path) -> None:
    empty = AuthService(AuthStore(tmp_path / "empty"), AuthConfig())
    reason, _ = _refused(empty.authorize, Credentials(), Permission.STATUS_READ)
    assert "add the first administrator with `vigil user add ID --role administrator`" in reason


def test_refusal_matrix(service: AuthService, clock: Clock, tmp_path: Path) -> None:
    """Every refusal the issue names: refused, with its reason, and audited."""
    rows: list[tuple[str, str]] = []

    def check(name: str, expected: str, call: object, *args: object, **kwargs: object) -> None:
        reason, audit = _refused(call, *args, **kwargs)
        assert expected in reason, f"{name}: {reason}"
        _denied(audit)
        rows.append((name, reason))

    check("no session", "no session", service.authorize, Credentials(), Permission.RECORD_READ, patient=PATIENT)
    forged = Credentials("A" * 43, "ws-1")
    check("forged token", "not a valid session token", service.authorize, forged, Permission.STATUS_READ)
    clinician = _login(service, "dr.osei")
    stolen = Credentials(clinician.token, "ws-9")
    check("another device", "another device", service.authorize, stolen, Permission.STATUS_READ)
    check("wrong role", "may not audit.read", service.authorize, clinician, Permission.AUDIT_READ)
    operator = _login(service, "op.kim", Setting.OPERATOR_CONSOLE)
    check(
        "operator reading content",
        "break the glass",
        service.authorize,
        operator,
        Permission.QUARANTINE_CONTENT,
        patient=PATIENT,
    )
    check(
        "operator reading a record",
        "break the glass",
        service.authorize,
        operator,
        Permission.RECORD_READ,
        patient=PATIENT,
    )
    check("break-glass without reason", "reason code", service.break_glass, operator, PATIENT, "", "", PASSWORD)
    check("break-glass, unknown reason", "reason code", service.break_glass, operator, PATIENT, "curious", "", PASSWORD)
    check(
        "break-glass, wrong password",
        "re-authentication failed",
        service.break_glass,
        operator,
        PATIENT,
        "message_investigation",
        "",
        "nope",
    )
    service.break_glass(operator, PATIENT, "message_investigation", "ADT stuck", PASSWORD)
    service.authorize(operator, Permission.QUARANTINE_CONTENT, patient=PATIENT)
    check(
        "break-glass for another patient",
        "another patient",
        service.authorize,
        operator,
        Permission.RECORD_READ,
        patient="GENHOSP|MRN7",
    )
    check(
        "break-glass does not give other permissions",
        "may not audit.read",
        service.authorize,
        operator,
        Permission.AUDIT_READ,
    )
    for _ in range(6):  # the operator stays active past the grant's 60 minutes; the clinician idles
        clock.now += 600
        service.authorize(operator, Permission.STATUS_READ)
    check(
        "after the break-glass window",
        "window for this patient has ended",
        service.authorize,
        operator,
        Permission.RECORD_READ,
        patient=PATIENT,
    )
    check("locked session", "locked", service.authorize, clinician, Permission.RECORD_READ, patient=PATIENT)
    service.unlock(clinician, PIN)
    service.logout(clinician)
    check(
        "replayed token after logout",
        "logged out",
        service.authorize,
        clinician,
        Permission.RECORD_READ,
        patient=PATIENT,
    )
    pharmacist = _login(service, "rx.lee")
    admin = service.authorize(_login(service, "admin", Setting.OFFICE), Permission.USER_MANAGE)
    service.disable_user(admin, "rx.lee")
    check(
        "disabled user (live session)",
        "user disabled",
        service.authorize,
        pharmacist,
        Permission.RECORD_READ,
        patient=PATIENT,
    )
    check("disabled user (login)", "disabled", service.login, "rx.lee", PASSWORD, Setting.PHARMACY, "ws-1")
    check(
        "wrong password",
        "wrong user id or password",
        service.login,
        "dr.osei",
        "guess guess guess",
        Setting.WARD,
        "ws-1",
    )
    check("unknown user", "wrong user id or password", service.login, "nobody", PASSWORD, Setting.WARD, "ws-1")
    expired = _login(service, "dr.osei")
    clock.now += 12 * 3600
    check("expired session", "over the 12 h limit", service.authorize, expired, Permission.RECORD_READ, patient=PATIENT)
    assert len(rows) == 19


def test_repeated_wrong_passwords_lock_the_account_for_a_while(service: AuthService, clock: Clock) -> None:
    for _ in range(5):
        _refused(service.login, "dr.osei", "not the password", Setting.WARD, "ws-1")
    reason, audit = _refused(service.login, "dr.osei", PASSWORD, Setting.WARD, "ws-1")
    assert "account locked after 5 wrong passwords" in reason
    assert audit[0][1].severity == "high"
    clock.now += 901
    _login(service, "dr.osei")


def test_break_glass_opens_a_review_until_a_privacy_officer_closes_it(service: AuthService) -> None:
    clinician = _login(service, "dr.osei")
    operator = _login(service, "op.kim", Setting.OPERATOR_CONSOLE)
    grant, audit = service.break_glass(operator, PATIENT, "message_investigation", "ORU stuck in quarantine", PASSWORD)
    [(patient, event)] = audit
    assert (patient, event.action, event.severity, event.reason) == (
        PATIENT,
        "break_glass",
        "high",
        "message_investigation",
    )
    [review] = service.reviews(open_only=True)
    assert (review.grant, review.user, review.patient) == (grant.id, "op.kim", PATIENT)
    reason, _ = _refused(service.authorize, clinician, Permission.AUDIT_REVIEW)
    assert "may not audit.review" in reason
    officer = service.authorize(_login(service, "po.diaz", Setting.OFFICE), Permission.AUDIT_REVIEW)
    closed, audit = service.close_review(officer, review.id, "appropriate", "ticket 1234")
    assert closed.reviewed_by == "po.diaz"
    assert audit[0][1].action == "audit_review"
    assert service.reviews(open_only=True) == []
    reason, _ = _refused(service.close_review, officer, review.id, "appropriate", "")
    assert "closed by po.diaz already" in reason


def test_in_the_emergency_department_the_pin_is_enough_to_break_the_glass(service: AuthService) -> None:
    ward = _login(service, "rx.lee", Setting.PHARMACY)
    reason, _ = _refused(service.break_glass, ward, PATIENT, "urgent_medication", "", PIN)
    assert "(password)" in reason
    emergency = _login(service, "rx.lee", Setting.EMERGENCY_DEPARTMENT)
    service.break_glass(emergency, PATIENT, "urgent_medication", "", PIN)
    service.authorize(emergency, Permission.RECORD_READ, patient=PATIENT)


def test_accounts_need_a_strong_secret_and_a_role_and_ids_are_unique(service: AuthService) -> None:
    admin = service.authorize(_login(service, "admin", Setting.OFFICE), Permission.USER_MANAGE)
    for kwargs, expected in (
        ({"password": "short", "pin": PIN, "roles": (Role.CLINICIAN,)}, "at least 12 characters"),
        ({"password": PASSWORD, "pin": "12", "roles": (Role.CLINICIAN,)}, "4 to 8 digits"),
        ({"password": PASSWORD, "pin": PIN, "roles": ()}, "at least one role"),
    ):
        reason, _ = _refused(service.add_user, admin, "new.user", name="", **kwargs)
        assert expected in reason
    reason, _ = _refused(
        service.add_user, admin, "dr.osei", name="", password=PASSWORD, pin=PIN, roles=(Role.CLINICIAN,)
    )
    assert "exists already" in reason
    reason, _ = _refused(
        service.add_user, None, "root2", name="", password=PASSWORD, pin=PIN, roles=(Role.ADMINISTRATOR,)
    )
    assert "log in as an administrator" in reason


def test_the_store_keeps_no_secret_in_clear(service: AuthService, tmp_path: Path) -> None:
    creds = _login(service, "dr.osei")
    service.flush()
    data = b"".join(p.read_bytes() for p in tmp_path.glob("auth.db*"))
    for secret in (PASSWORD, PIN, creds.token):
        assert secret.encode() not in data
    assert (tmp_path / "auth.db").stat().st_mode & 0o077 == 0


def test_the_permission_matrix_and_timeouts_come_from_config() -> None:
    config = decode_config(
        """
        [auth]
        absolute_timeout_s = 3600
        [auth.idle_timeout_s]
        ward = 120
        [auth.permissions]
        integration_operator = ["status.read", "log.content"]
        [workstation]
        setting = "emergency_department"
        """
    )
    assert config.auth.idle_timeout_s.of(Setting.WARD) == 120
    assert config.auth.permissions[Role.OPERATOR] == frozenset({Permission.STATUS_READ, Permission.LOG_CONTENT})
    assert config.workstation.setting is Setting.EMERGENCY_DEPARTMENT
    with pytest.raises(ConfigError, match="idle_timeout_s"):
        decode_config("[auth.idle_timeout_s]\nlobby = 5\n")
    with pytest.raises(ConfigError):
        decode_config('[auth.permissions]\nclinician = ["everything"]\n')
    for off in ("[audit]\nenabled = false\n", "[auth]\naudit = false\n"):  # there is no switch to turn auditing off
        with pytest.raises(ConfigError, match="unknown key"):
            decode_config(off)


def test_audit_events_round_trip_through_the_log_encoding(service: AuthService) -> None:
    from engine.auth import audit_envelope, fhir_audit_event
    from engine.core.model import Envelope

    operator = _login(service, "op.kim", Setting.OPERATOR_CONSOLE)
    _, audit = service.break_glass(operator, PATIENT, "emergency_treatment", "", PASSWORD)
    patient, event = audit[0]
    env = audit_envelope(event, patient, node="vigil-1")
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(env), type=Envelope) == env
    doc = fhir_audit_event(7, event.at, patient, event, node="vigil-1")
    assert doc["resourceType"] == "AuditEvent"
    assert doc["entity"][0]["what"]["identifier"]["value"] == PATIENT
    assert [c["code"] for c in doc["purposeOfEvent"][0]["coding"]] == ["BTG", "ETREAT"]
    assert doc["agent"][0]["who"]["identifier"]["value"] == "op.kim"


def test_a_screen_refreshing_itself_does_not_keep_a_session_from_locking(service: AuthService, clock: Clock) -> None:
    """`vigil top` asks every second, passively: the session still locks when the person has gone."""
    creds = _login(service, "op.kim", Setting.OPERATOR_CONSOLE)
    for _ in range(899):
        clock.now += 1
        service.authorize(creds, Permission.STATUS_READ, passive=True)
    clock.now += 1
    reason, _ = _refused(service.authorize, creds, Permission.STATUS_READ, passive=True)
    assert "locked after 15 min idle" in reason


_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["use", "lock", "unlock", "wrong_pin"]),
        # The boundaries (the ward's 600 s idle limit, the 12 h limit) as often as anything between.
        st.one_of(st.sampled_from([0, 1, 599, 600, 601, 43_199, 43_200]), st.integers(min_value=0, max_value=9000)),
    ),
    max_size=25,
)


@settings(max_examples=int(os.environ.get("VIGIL_AUTH_EXAMPLES", "60")), deadline=None)
@given(steps=_STEPS)
def test_session_states_follow_a_simple_model_on_any_history(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int]]
) -> None:
    """Any interleaving of use, waiting, lock and (wrong) PINs: the service agrees with a ten-line model of the rules."""
    clock = Clock()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("engine.auth.hashing._HASHER", PasswordHasher(time_cost=1, memory_cost=64, parallelism=1))
        auth = AuthService(AuthStore(tmp_path_factory.mktemp("auth")), AuthConfig(), clock=clock)
        auth.add_user(None, "dr.a", name="", roles=(Role.ADMINISTRATOR, Role.CLINICIAN), password=PASSWORD, pin=PIN)
        creds = _login(auth, "dr.a", Setting.WARD)
        created, last, locked, ended, wrong = T0, T0, False, False, 0
        for action, wait in steps:
            clock.now += wait
            now = clock.now
            over = ended or now - created >= 12 * 3600
            idle = now - last >= 600
            if action == "use":
                allowed = not over and not locked and not idle
                locked = locked or (not over and idle)
                last = now if allowed else last
                call: Any = lambda: auth.authorize(creds, Permission.RECORD_READ, patient=PATIENT)  # noqa: E731
            elif action == "lock":
                allowed, locked = not over, locked or not over
                call = lambda: auth.lock(creds)  # noqa: E731
            elif action == "unlock":
                allowed = not over
                if allowed:
                    locked, wrong, last = False, 0, now
                call = lambda: auth.unlock(creds, PIN)  # noqa: E731
            else:
                allowed = False
                if not over:
                    wrong, locked = wrong + 1, True
                    ended = wrong >= 3
                call = lambda: auth.unlock(creds, "0000")  # noqa: E731
            try:
                call()
                outcome = True
            except AccessRefusedError:
                outcome = False
            assert outcome == allowed, (action, wait, steps)


def test_a_user_changes_their_own_password_and_pin_and_their_other_sessions_end(service: AuthService) -> None:
    here = _login(service, "dr.osei", Setting.WARD, "ws-1")
    elsewhere = _login(service, "dr.osei", Setting.OFFICE, "ws-2")
    reason, audit = _refused(service.change_secrets, here, "not my password", password="a new long password")
    assert reason == "the current password is wrong"
    assert audit[0][1].severity == "high"
    reason, _ = _refused(service.change_secrets, here, PASSWORD, pin="12")
    assert "4 to 8 digits" in reason
    audit = service.change_secrets(here, PASSWORD, password="a new long password", pin="97531")
    assert audit[0][1].detail == "password and PIN changed"
    service.authorize(here, Permission.RECORD_READ, patient=PATIENT)  # this session goes on
    reason, _ = _refused(service.authorize, elsewhere, Permission.STATUS_READ)
    assert "session ended (secrets changed)" in reason
    _refused(service.login, "dr.osei", PASSWORD, Setting.WARD, "ws-1")
    service.login("dr.osei", "a new long password", Setting.WARD, "ws-1")
    service.lock(here)
    _refused(service.unlock, here, PIN)
    service.unlock(here, "97531")


def test_an_administrator_resets_a_forgotten_password_and_a_lockout(service: AuthService) -> None:
    clinician = _login(service, "dr.osei")
    for _ in range(5):
        _refused(service.login, "dr.osei", "forgotten, sorry", Setting.WARD, "ws-1")
    admin = service.authorize(_login(service, "admin", Setting.OFFICE), Permission.USER_MANAGE)
    reason, _ = _refused(service.reset_secrets, admin, "dr.osei", password="short", pin=PIN)
    assert "12 characters" in reason
    [(_, event)] = service.reset_secrets(admin, "dr.osei", password="a fresh long password", pin="2468")
    assert (event.user, event.action) == ("admin", "secrets_reset")
    reason, _ = _refused(service.authorize, clinician, Permission.STATUS_READ)
    assert "session ended (secrets reset)" in reason
    service.login("dr.osei", "a fresh long password", Setting.WARD, "ws-1")  # the lockout lifted with the reset
    operator = service.authorize(_login(service, "op.kim"), Permission.STATUS_READ)
    reason, _ = _refused(service.authorize, Credentials(operator.session.id, "ws-1"), Permission.USER_MANAGE)
    assert "not a valid session token" in reason  # a session id is not a token


def test_a_registered_workstations_setting_is_the_sessions_whatever_the_sign_in_asks(
    service: AuthService, clock: Clock
) -> None:
    """The idle lock is the hospital's to set per device: registered, it wins; unknown, a browser gets the
    strictest; a CLI (which says its configured setting) keeps its own until its host is registered."""
    admin = service.authorize(_login(service, "admin", Setting.OPERATOR_CONSOLE), Permission.USER_MANAGE)
    [(_p, event)] = service.register_workstation(admin, "browser-ed3", Setting.EMERGENCY_DEPARTMENT, "ED bay 3")
    assert (event.action, event.detail) == (
        "workstation_register",
        "workstation browser-ed3 (ED bay 3): emergency_department",
    )
    assert (
        service.login("dr.osei", PASSWORD, Setting.OFFICE, "browser-ed3").session.setting
        is Setting.EMERGENCY_DEPARTMENT
    )
    assert service.login("dr.osei", PASSWORD, None, "browser-new").session.setting is Setting.EMERGENCY_DEPARTMENT
    assert service.login("dr.osei", PASSWORD, Setting.WARD, "cli-host").session.setting is Setting.WARD

    service.register_workstation(admin, "browser-ed3", Setting.OFFICE, "moved to the office")  # replaced
    assert service.setting_of("browser-ed3") is Setting.OFFICE
    [(_p, gone)] = service.forget_workstation(admin, "browser-ed3")
    assert gone.action == "workstation_forget"
    assert service.setting_of("browser-ed3") is Setting.EMERGENCY_DEPARTMENT
    assert [w.device for w in service.workstations()] == []
    reason, _ = _refused(service.forget_workstation, admin, "browser-ed3")
    assert reason == "no workstation browser-ed3 is registered"
    reason, _ = _refused(service.register_workstation, admin, "bad device!", Setting.WARD, "")
    assert "cannot name a device" in reason


def test_the_unregistered_setting_is_the_configurations(tmp_path: Path, clock: Clock) -> None:
    auth = AuthService(AuthStore(tmp_path), AuthConfig(unregistered_setting=Setting.WARD), clock=clock)
    auth.add_user(None, "admin", name="Admin", roles=(Role.ADMINISTRATOR,), password=PASSWORD, pin=PIN)
    assert auth.login("admin", PASSWORD, None, "browser-x").session.setting is Setting.WARD
