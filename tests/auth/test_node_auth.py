"""Authentication through a real `vigil run` process and the real CLI: a day of sessions, break-the-glass, audit.

Accounts are made with `vigil user add` (the first administrator needs no
session), people log in with `vigil login`, and every answer is checked
twice: on the terminal, and in the audit trail the log keeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from engine.core.mllp import MLLPDecoder
from tests.harness.helpers import hl7
from tests.harness.node_process import ROOT, VIGIL, exchange
from tests.harness.sessions import PASSWORD, PIN

PATIENT = "GENHOSP|MRN42"


class Desk:
    """One workstation's CLI: its config (setting, device) and its own session file."""

    def __init__(self, tmp_path: Path, name: str, data: Path, setting: str = "ward", extra: str = "") -> None:
        self.config = tmp_path / f"{name}.toml"
        self.config.write_text(f'[workstation]\nsetting = "{setting}"\ndevice = "{name}"\n{extra}')
        self.session = tmp_path / f"{name}.session.json"
        self.data = data

    def run(self, *args: str, secrets: tuple[str, ...] = (), env: dict[str, str] | None = None) -> tuple[int, str, str]:
        command = [VIGIL, "--config", str(self.config), *args, "--data", str(self.data)]
        if secrets:
            command.append("--secrets-stdin")
        done = subprocess.run(
            command,
            input="".join(f"{s}\n" for s in secrets).encode(),
            capture_output=True,
            cwd=ROOT,
            env={**os.environ, "VIGIL_SESSION_FILE": str(self.session), **(env or {})},
            timeout=120,
            check=False,
        )
        return done.returncode, done.stdout.decode(), done.stderr.decode()

    def ok(self, *args: str, secrets: tuple[str, ...] = ()) -> Any:
        code, out, err = self.run(*args, secrets=secrets)
        assert code == 0, f"{args}: {err}"
        return json.loads(out) if "--json" in args else out

    def refused(self, *args: str, secrets: tuple[str, ...] = ()) -> str:
        code, _, err = self.run(*args, secrets=secrets)
        assert code == 1, f"{args} was not refused"
        lines = err.strip().splitlines()
        assert len(lines) == 1, f"{args}: not one line: {err}"
        return lines[0]


@contextmanager
def running(data: Path, log: Path, config: Path | None = None, env: dict[str, str] | None = None) -> Iterator[int]:
    """`vigil run --mllp` with its stderr (the node's logs) kept in `log`."""
    args = [VIGIL, *(["--config", str(config)] if config else []), "run", "--mllp", "127.0.0.1:0", "--data", str(data)]
    with log.open("ab") as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, cwd=ROOT, env={**os.environ, **(env or {})})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert "listening on" in line, f"the node did not start: {line!r}"
        yield int(line.rsplit(":", 1)[1].split()[0])
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        if proc.stdout is not None:
            proc.stdout.close()


def _send(port: int, *messages: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        decoder = MLLPDecoder()
        for message in messages:
            assert b"MSA|AA" in exchange(conn, message, decoder)


def _staff(tmp_path: Path, data: Path) -> dict[str, Desk]:
    """The first administrator, then a clinician, an operator and a privacy officer, each at their own desk."""
    desks = {
        "admin": Desk(tmp_path, "admin", data, "office"),
        "dr.osei": Desk(tmp_path, "ward-3", data, "ward"),
        "op.kim": Desk(tmp_path, "ops-1", data, "operator_console"),
        "po.diaz": Desk(tmp_path, "privacy-1", data, "office"),
    }
    admin = desks["admin"]
    assert "first administrator" in admin.ok("user", "add", "admin", "--role", "administrator", secrets=(PASSWORD, PIN))
    admin.ok("login", "admin", secrets=(PASSWORD,))
    for user, role in (("dr.osei", "clinician"), ("op.kim", "integration_operator"), ("po.diaz", "privacy_officer")):
        admin.ok("user", "add", user, "--role", role, secrets=(PASSWORD, PIN))
        desks[user].ok("login", user, secrets=(PASSWORD,))
    return desks


def _critical(name: str = "Osei^Ama", mrn: str = "MRN42", birth: str = "19700101") -> bytes:
    return hl7(
        "MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261124101500||ORU^R01^ORU_R01|K1|P|2.5.1",
        f"PID|1||{mrn}^^^GENHOSP^MR||{name}||{birth}|F",
        "OBR|1|ORD1|FIL1|2823-3^Potassium^LN",
        "OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F",
    )


def test_a_day_of_sessions_break_the_glass_and_the_audit_trail(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log = tmp_path / "node.log"
    with running(data, log) as port:
        desks = _staff(tmp_path, data)
        clinician, operator, officer, admin = (desks[u] for u in ("dr.osei", "op.kim", "po.diaz", "admin"))
        _send(port, _critical())
        assert stat.S_IMODE((data / "admin.sock").stat().st_mode) == 0o600
        assert stat.S_IMODE(data.stat().st_mode) == 0o700

        record = clinician.ok("patient", PATIENT, "--json")
        assert record["results"][0]["current"]["value"] == "6.9"
        assert "no record of GENHOSP|NOBODY" in clinician.refused("patient", "GENHOSP|NOBODY")
        assert "may not record.read: break the glass" in operator.refused("patient", PATIENT)
        assert "Potassium" not in operator.ok("log")  # metadata: kinds and lanes, no content
        assert "may not log.content" in operator.refused("log", "--patient", PATIENT)
        assert "reason code" in operator.refused("break-glass", PATIENT, secrets=(PASSWORD,))
        why = ("--reason", "message_investigation", "--note", "stuck ORU")
        grant = operator.ok("break-glass", PATIENT, *why, "--json", secrets=(PASSWORD,))
        assert grant["patient"] == PATIENT
        assert operator.ok("patient", PATIENT, "--json") == record
        counts = operator.ok("status", "--json")["auth"]
        assert (counts["break_glass_reviews_open"], counts["sessions_active"]) == (1, 4)
        assert "break-the-glass reviews open: 1" in operator.ok("status")
        assert "another patient" in operator.refused("patient", "GENHOSP|MRN7")

        assert "may not audit.read" in clinician.refused("audit", "reviews")
        [review] = officer.ok("audit", "reviews", "--json")
        assert (review["user"], review["patient"], review["reason"]) == ("op.kim", PATIENT, "message_investigation")
        officer.ok("audit", "review", review["id"], "--outcome", "appropriate", "--note", "ticket 77")
        assert officer.ok("audit", "reviews", "--json") == []

        assert "op.kim" in officer.ok("audit", "access", PATIENT)  # the table a person reads
        trail = [json.loads(line) for line in officer.run("audit", "access", PATIENT, "--json")[1].splitlines()]
        seen = [(t["user"], t["action"], t["outcome"]) for t in trail]
        assert seen[:5] == [
            ("dr.osei", "record", "allowed"),
            ("op.kim", "record", "denied"),
            ("op.kim", "log", "denied"),
            ("op.kim", "break_glass", "denied"),  # no reason code
            ("op.kim", "break_glass", "allowed"),
        ]
        assert ("op.kim", "record", "allowed") in seen
        assert ("po.diaz", "audit_review", "allowed") in seen
        assert trail[1]["setting"] == "operator_console"
        assert trail[1]["device"] == "ops-1"
        assert next(t for t in trail if t["action"] == "break_glass")["severity"] == "high"

        exported = [
            json.loads(line) for line in officer.ok("audit", "export", "--since", "2000-01-01T00:00:00Z").splitlines()
        ]
        assert all(e["resourceType"] == "AuditEvent" for e in exported)
        btg = [e for e in exported if any(c["code"] == "BTG" for p in e.get("purposeOfEvent", []) for c in p["coding"])]
        assert btg
        assert btg[0]["entity"][0]["what"]["identifier"]["value"] == PATIENT
        logins = [e for e in exported if e["type"]["code"] == "110114" and e["outcome"] == "0"]
        assert len(logins) >= 4
        window = ("audit", "export", "--since", "2000-01-01T00:00:00Z", "--until", "2100-01-01T00:00:00Z")
        kim = [json.loads(line) for line in officer.ok(*window, "--user", "op.kim").splitlines()]
        assert kim
        assert {e["agent"][0]["who"]["identifier"]["value"] for e in kim} == {"op.kim"}
        assert officer.ok("audit", "export", "--since", "2100-01-01T00:00:00Z") == ""

        # Logout, then the same token again (a replay): refused, and audited.
        clinician_token = json.loads(clinician.session.read_text())
        clinician.ok("logout")
        clinician.session.write_text(json.dumps(clinician_token))
        assert "session ended (logged out)" in clinician.refused("patient", PATIENT)
        admin.ok("user", "reset", "po.diaz", secrets=("a reset long password", "13579"))
        assert "session ended (secrets reset)" in officer.refused("audit", "reviews")
        admin.ok("user", "disable", "op.kim")
        assert "user disabled" in operator.refused("status")
        assert "wrong user id or password" in clinician.refused("login", "dr.osei", secrets=("not it at all",))

    text = log.read_text()
    assert "auth.denied" in text  # refusals reach the node's log, for alerting
    for secret in (PASSWORD, PIN, clinician_token["token"], "Osei", "19700101"):
        assert secret not in text


def test_sessions_survive_a_node_restart_and_a_locked_one_resumes_with_its_context(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log = tmp_path / "node.log"
    idle = Desk(tmp_path, "ward-9", data, "ward")
    with running(data, log) as port:
        _send(port, _critical())
        Desk(tmp_path, "admin", data).ok(
            "user", "add", "admin", "--role", "administrator", "--role", "clinician", secrets=(PASSWORD, PIN)
        )
        idle.ok("login", "admin", secrets=(PASSWORD,))
        idle.ok("patient", PATIENT, "--json")
    with running(data, log, config=idle.config):
        assert idle.ok("whoami", "--json")["context"]["patient"] == PATIENT
        idle.ok("lock")
        assert "locked" in idle.refused("patient", PATIENT)
        assert "wrong PIN" in idle.refused("unlock", secrets=("0000",))
        unlocked = idle.ok("unlock", "--json", secrets=(PIN,))
        assert unlocked["context"]["patient"] == PATIENT
        assert unlocked["context"]["queries"] == [["record", PATIENT]]
        idle.ok("patient", PATIENT, "--json")


def test_break_the_glass_works_with_postgresql_and_nats_down(tmp_path: Path) -> None:
    """Nothing but the node itself is needed: the grant and its audit are local (SQLite and the log)."""
    data = tmp_path / "data"
    extra = (
        '[projections]\ndsn_env = "VIGIL_TEST_NO_SUCH_VARIABLE"\ndsn = "postgresql://postgres@127.0.0.1:9/none"\n'
        '[nats]\nservers = ["nats://127.0.0.1:9"]\n[[nats.subjects]]\nsubject = "hl7.in"\nmode = "core"\n'
    )  # port 9 (discard): nothing answers there
    desk = Desk(tmp_path, "ed-1", data, "emergency_department", extra=extra)
    with running(data, tmp_path / "node.log", config=desk.config) as port:
        _send(port, _critical())
        Desk(tmp_path, "admin", data).ok("user", "add", "admin", "--role", "administrator", secrets=(PASSWORD, PIN))
        Desk(tmp_path, "admin", data).ok("login", "admin", secrets=(PASSWORD,))
        Desk(tmp_path, "admin", data).ok("user", "add", "rx.lee", "--role", "pharmacist", secrets=(PASSWORD, PIN))
        desk.ok("login", "rx.lee", secrets=(PASSWORD,))
        # In the emergency department the PIN is the re-authentication.
        desk.ok("break-glass", PATIENT, "--reason", "emergency_treatment", secrets=(PIN,))
        status = desk.ok("status", "--json")
        assert status["projections"]["state"].startswith("waiting for the database")
        assert status["sources"]["nats"] in {"starting", "unreachable"}  # still trying: never connected


@pytest.mark.usefixtures("collector")
def test_no_canary_phi_in_logs_traces_or_metrics_through_a_realistic_session(
    tmp_path: Path, collector: tuple[str, dict[str, list[bytes]]]
) -> None:
    url, received = collector
    name, given, mrn, birth = "Zyxwvutsrq", "Qponmlkj", "CANARY24680", "19230417"
    canary = f"GENHOSP|{mrn}"
    data = tmp_path / "data"
    log = tmp_path / "node.log"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_METRIC_EXPORT_INTERVAL": "500"}
    with running(data, log, env=env) as port:
        _send(port, _critical(f"{name}^{given}", mrn, birth))
        desks = _staff(tmp_path, data)
        desks["dr.osei"].ok("patient", canary, "--json")
        desks["op.kim"].refused("patient", canary)
        desks["op.kim"].refused("break-glass", canary, "--reason", "emergency_treatment", secrets=("wrong password!",))
        desks["op.kim"].ok(
            "break-glass", canary, "--reason", "message_investigation", "--note", f"re {name}", secrets=(PASSWORD,)
        )
        desks["op.kim"].ok("patient", canary, "--json")
        desks["dr.osei"].refused("audit", "access", canary)
        desks["po.diaz"].ok("audit", "access", canary)
        desks["dr.osei"].refused("unlock", secrets=("9999",))
        desks["dr.osei"].refused("login", mrn, secrets=(PASSWORD,))  # an identifier typed as a user id
    logs = log.read_bytes()
    traces = b"".join(received.get("/v1/traces", []))
    metrics = b"".join(received.get("/v1/metrics", []))
    assert b"auth.denied" in logs
    assert traces
    assert metrics
    for where, payload in (("logs", logs), ("traces", traces), ("metrics", metrics)):
        for secret in (name, given, mrn, birth, PASSWORD):
            assert secret.encode() not in payload, f"{secret} leaked into the {where}"


def test_without_a_node_or_accounts_the_cli_says_which_in_one_line(tmp_path: Path) -> None:
    """No node and no store: nothing is created by a read, and the line says what is missing."""
    desk = Desk(tmp_path, "desk", tmp_path / "empty")
    assert "no accounts on" in desk.refused("whoami")
    assert "no node is running" in desk.refused("status")
    assert "no accounts on" in desk.refused("login", "dr.osei", secrets=(PASSWORD,))
    assert not (tmp_path / "empty").exists()


def test_the_admin_endpoint_over_tls_serves_a_workstation_elsewhere(tmp_path: Path) -> None:
    """`[admin] listen` with a certificate: a remote CLI logs in and reads a record over TLS; the rest stays local."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "node.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "node.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    config = tmp_path / "node.toml"
    config.write_text('[admin]\nlisten = "127.0.0.1:0"\ntls_cert_file = "node.pem"\ntls_key_file = "node.key"\n')
    data = tmp_path / "data"
    args = [VIGIL, "--config", str(config), "run", "--mllp", "127.0.0.1:0", "--data", str(data)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        assert proc.stdout is not None
        mllp = int(proc.stdout.readline().decode().rsplit(":", 1)[1].split()[0])
        line = proc.stdout.readline().decode()
        assert "admin endpoint on" in line, line
        admin_port = int(line.rsplit(":", 1)[1].split()[0])
        _send(mllp, _critical())
        far = Desk(
            tmp_path, "far-1", tmp_path / "nowhere", extra=f'node = "127.0.0.1:{admin_port}"\ntls_ca_file = "ca.pem"\n'
        )
        assert "on the node's host" in far.refused(
            "user", "add", "admin", "--role", "administrator", secrets=(PASSWORD, PIN)
        )
        local = Desk(tmp_path, "local", data, "office")
        local.ok("user", "add", "admin", "--role", "administrator", secrets=(PASSWORD, PIN))
        local.ok("login", "admin", secrets=(PASSWORD,))
        local.ok("user", "add", "dr.osei", "--role", "clinician", secrets=(PASSWORD, PIN))
        far.ok("login", "dr.osei", secrets=(PASSWORD,))
        assert far.ok("patient", PATIENT, "--json")["results"][0]["current"]["value"] == "6.9"
        assert far.ok("whoami", "--json")["device"] == "far-1"
        assert "run it on the node's host" in far.refused("log")
        stranger = Desk(
            tmp_path,
            "far-2",
            tmp_path / "nowhere",
            extra=f'node = "127.0.0.1:{admin_port}"\ntls_ca_file = "other-ca.pem"\n',
        )
        assert "TLS refused" in stranger.refused("login", "dr.osei", secrets=(PASSWORD,))
        with socket.create_connection(("127.0.0.1", admin_port), timeout=10) as plain:
            # A request in clear (the admin frame of {"op": "health"}) gets no answer in clear.
            body = b"\x81\xa2op\xa6health"
            plain.sendall(len(body).to_bytes(4, "little") + body)
            answer = b""
            with contextlib.suppress(OSError):
                while chunk := plain.recv(4096):
                    answer += chunk
            assert b"vigil" not in answer
            assert b"last_lsn" not in answer
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_new_login_ends_the_session_it_replaces(tmp_path: Path) -> None:
    """No node running: the CLI answers itself, and the replaced token is refused like a logged-out one."""
    data = tmp_path / "data"
    desk = Desk(tmp_path, "ward-1", data)
    desk.ok("user", "add", "admin", "--role", "administrator", "--role", "clinician", secrets=(PASSWORD, PIN))
    desk.ok("login", "admin", secrets=(PASSWORD,))
    first = desk.session.read_text()
    desk.ok("login", "admin", secrets=(PASSWORD,))
    second = desk.session.read_text()
    desk.session.write_text(first)
    replaced = desk.ok("whoami", "--json")
    assert (replaced["state"], replaced["why"]) == ("ended", "session ended (logged out)")
    assert "session ended (logged out)" in desk.refused("patient", PATIENT)
    desk.session.write_text(second)
    assert desk.ok("whoami", "--json")["state"] == "active"


def test_passwd_changes_the_password_and_pin_from_the_cli(tmp_path: Path) -> None:
    desk = Desk(tmp_path, "ward-2", tmp_path / "data")
    desk.ok("user", "add", "admin", "--role", "administrator", secrets=(PASSWORD, PIN))
    desk.ok("login", "admin", secrets=(PASSWORD,))
    assert "password and PIN" in desk.ok("passwd", "--pin", secrets=(PASSWORD, "a brand new password", "86420"))
    assert "wrong user id or password" in desk.refused("login", "admin", secrets=(PASSWORD,))
    desk.ok("login", "admin", secrets=("a brand new password",))
    desk.ok("lock")
    desk.ok("unlock", secrets=("86420",))
