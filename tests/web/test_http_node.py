"""The HTTP face of a real `vigil run` process: probes, metrics, HL7 v2 and FHIR in, FHIR reads as of any moment.

Clients are registered through `vigil client add` (an administrator's
session), and every read is checked in the log afterwards: audited before it
was answered. The node is then killed (SIGKILL): every message answered over
HTTP is in its log.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from engine.auth import ApiClient, AuthStore, Role, token_digest
from engine.core.mllp import MLLPDecoder
from engine.core.model import RecordAccessed
from engine.web import patient_id
from tests.harness.helpers import MSH_ADT, PID, hl7, oru
from tests.harness.node_process import NO_PID, ROOT, VIGIL, exchange, http_node, log_ids, log_records
from tests.harness.sessions import sign_in

KEY = "GENHOSP|MRN42"  # PID's MR identifier
HL7 = {"Content-Type": "x-application/hl7-v2+er7"}
FHIR = {"Content-Type": "application/fhir+json"}


def _critical(control_id: str, when: str = "20261124095500") -> bytes:
    msh = f"MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261124101500||ORU^R01^ORU_R01|{control_id}|P|2.5.1"
    return oru(f"OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F|||{when}", msh=msh)


def _vigil(data: Path, config: Path, *args: str) -> str:
    proc = subprocess.run(
        [VIGIL, "--config", str(config), *args, "--data", str(data)],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "http.toml"
    path.write_text('[http]\nlisten = "127.0.0.1:0"\nbody_bytes_max = 65536\n')
    return path


@pytest.fixture
def served(
    tmp_path: Path, config: Path
) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client, Path, dict[str, str]]]:
    """A node with HTTP on, and two clients' tokens: `lab` (writes, reads results and patients), `viewer`."""
    data = tmp_path / "data"
    with (
        http_node(data, config) as (proc, _mllp, port),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        sign_in(data, "adm", Role.ADMINISTRATOR, config=config)
        lab = _vigil(
            data,
            config,
            "client",
            "add",
            "lab",
            "--scope",
            "system/*.write",
            "--scope",
            "system/Observation.read",
            "--scope",
            "system/Patient.read",
        ).strip()
        viewer = _vigil(data, config, "client", "add", "viewer", "--scope", "system/*.read").strip()
        yield proc, http, data, {"lab": lab, "viewer": viewer}


def _bearer(token: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **more}


def test_probes_and_metrics_need_no_token_and_say_no_phi(
    served: tuple[subprocess.Popen[bytes], httpx.Client, Path, dict[str, str]],
) -> None:
    _proc, http, _data, tokens = served
    assert http.get("/healthz").text == "ok\n"
    ready = http.get("/readyz")
    assert (ready.status_code, ready.text) == (200, "ready\n")
    assert http.post("/hl7v2", content=_critical("M1"), headers=_bearer(tokens["lab"], **HL7)).status_code == 200
    metrics = http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    done = {s.labels["lane"]: s.value for s in families["vigil_lane_done"].samples if s.name.endswith("_total")}
    assert done["critical"] == 1
    assert families["vigil_wal_last_lsn"].samples[0].value >= 1
    assert {s.labels["part"] for s in families["vigil_part_restarts"].samples} >= {"log", "lanes", "http", "mllp"}
    assert "MRN42" not in metrics.text
    assert "Doe" not in metrics.text
    assert families["vigil_mllp_connections"].samples[0].value == 0

    def senders() -> dict[str, float]:
        found = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
        family = found.get("vigil_sender_last_seen_timestamp_seconds")
        return {s.labels["sender"]: s.value for s in family.samples} if family else {}

    deadline = time.monotonic() + 20
    while "LAB^GENHOSP" not in senders():  # once the search index has taken it (every [search] interval_s)
        assert time.monotonic() < deadline, "the sender's last-seen time never appeared"
        time.sleep(0.2)
    assert abs(senders()["LAB^GENHOSP"] - time.time()) < 600


def test_hl7v2_over_http_is_answered_with_its_ack_once_durable(
    served: tuple[subprocess.Popen[bytes], httpx.Client, Path, dict[str, str]],
) -> None:
    proc, http, data, tokens = served
    lab = _bearer(tokens["lab"], **HL7)
    accepted = http.post("/hl7v2", content=_critical("H1"), headers=lab)
    assert accepted.status_code == 200
    assert accepted.headers["content-type"] == "x-application/hl7-v2+er7"
    assert accepted.headers["cache-control"] == "no-store"
    assert accepted.content.split(b"\r")[1] == b"MSA|AA|H1"
    again = http.post("/hl7v2", content=_critical("H1"), headers=lab)
    assert again.content.split(b"\r")[1] == b"MSA|AA|H1"  # a duplicate gets the same answer, stored once

    refused = http.post("/hl7v2", content=NO_PID, headers=lab)
    assert refused.status_code == 400
    assert refused.content.split(b"\r")[1].startswith(b"MSA|AR|BAD1")
    assert b"ERR|" in refused.content

    assert http.post("/hl7v2", content=_critical("H2")).status_code == 401
    viewer = http.post("/hl7v2", content=_critical("H2"), headers=_bearer(tokens["viewer"], **HL7))
    assert viewer.status_code == 403
    assert viewer.headers["connection"] == "close"  # its body was never read: the connection cannot go on
    assert "system/*.write" in viewer.json()["issue"][0]["diagnostics"]
    wrong = http.post(
        "/hl7v2", content=_critical("H2"), headers=_bearer(tokens["lab"], **{"Content-Type": "image/png"})
    )
    assert wrong.status_code == 415
    big = http.post("/hl7v2", content=_critical("H3") + b"X" * 70000, headers=lab)
    assert (big.status_code, big.json()["resourceType"]) == (413, "OperationOutcome")

    proc.send_signal(signal.SIGKILL)  # no stop: only what was durable before each answer is there
    proc.wait(timeout=30)
    ids = log_ids(data)
    assert sum(1 for i in ids if i.endswith("|H1")) == 1
    assert not any(i.endswith(("|H2", "|H3")) for i in ids)
    sign_in(data, "op.kim", Role.OPERATOR)
    quarantined = _vigil(data, data.parent / "http.toml", "quarantine", "list", "--json")
    assert [json.loads(line)["source"] for line in quarantined.splitlines()] == ["http:lab"]


def _bundle(identifier: str, value: float) -> bytes:
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": "urn:oid:1.2.3", "value": identifier}],
        "name": [{"family": "Rivera", "given": ["Ana"]}],
        "gender": "female",
        "birthDate": "1980-02-03",
    }
    obs = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3", "display": "Potassium"}]},
        "subject": {"reference": "urn:uuid:p1"},
        "effectiveDateTime": "2026-12-01T08:00:00Z",
        "valueQuantity": {"value": value, "unit": "mmol/L"},
    }
    entries = [
        {"fullUrl": f"urn:uuid:{r['id']}", "resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
        for r in (patient, obs)
    ]
    return json.dumps(
        {"resourceType": "Bundle", "id": f"b-{identifier}-{value}", "type": "transaction", "entry": entries}
    ).encode()


def test_fhir_in_is_answered_once_durable_and_a_duplicate_the_same(
    served: tuple[subprocess.Popen[bytes], httpx.Client, Path, dict[str, str]],
) -> None:
    _proc, http, _data, tokens = served
    lab = _bearer(tokens["lab"], **FHIR)
    created = http.post("/fhir", content=_bundle("A1", 6.9), headers=lab)
    assert created.status_code == 201, created.text
    assert created.json()["issue"][0]["severity"] == "information"
    again = http.post("/fhir", content=_bundle("A1", 6.9), headers=lab)
    assert (again.status_code, again.headers["x-vigil-lsn"]) == (200, created.headers["x-vigil-lsn"])
    bad = http.post("/fhir", content=b'{"resourceType": "Bundle", "type": "transaction", "entry": [', headers=lab)
    assert bad.status_code == 400  # lab may write every type; the body is refused for what it is, and kept
    assert "refused (kept in quarantine)" in bad.json()["issue"][0]["diagnostics"]
    bad = http.post(
        "/fhir",
        content=b'{"resourceType": "Bundle", "type": "transaction", "entry": [',
        headers=_bearer(tokens["viewer"], **FHIR),
    )
    assert bad.status_code == 403  # a body whose types cannot be read needs a write scope on every type

    read = http.get(f"/fhir/Patient/{patient_id('urn:oid:1.2.3|A1')}", headers=_bearer(tokens["lab"]))
    assert read.status_code == 200, read.text
    assert read.json()["name"] == [{"family": "Rivera", "given": ["Ana"]}]


def test_reads_as_of_any_moment_audited_before_they_are_answered(
    served: tuple[subprocess.Popen[bytes], httpx.Client, Path, dict[str, str]],
) -> None:
    proc, http, data, tokens = served
    lab, viewer = _bearer(tokens["lab"]), _bearer(tokens["viewer"])
    admit = hl7(MSH_ADT, PID, "PV1|1|I|W1^101^A||||||||||||||||V100|||||||||||||||||||||||||20261124080000")
    assert http.post("/hl7v2", content=admit, headers=_bearer(tokens["lab"], **HL7)).status_code == 200
    assert http.post("/hl7v2", content=_critical("R1"), headers=_bearer(tokens["lab"], **HL7)).status_code == 200
    pid = patient_id(KEY)

    patient = http.get(f"/fhir/Patient/{pid}", headers=lab)
    assert patient.json()["name"] == [{"family": "Doe", "given": ["Jane", "Q"]}]
    assert patient.headers["content-type"] == "application/fhir+json"
    found = http.get("/fhir/Patient", params={"identifier": KEY}, headers=lab).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [pid]

    results = http.get(
        "/fhir/Observation", params={"patient": pid, "code": "http://loinc.org|2823-3"}, headers=lab
    ).json()
    assert results["total"] == 1
    assert results["entry"][0]["resource"]["valueQuantity"] == {"value": 6.9, "unit": "mmol/L"}
    before = http.get(
        "/fhir/Observation", params={"patient": pid, "_as-of": "2026-11-24T09:00:00Z"}, headers=lab
    ).json()
    assert (before["total"], "entry" in before) == (0, False)  # the result's clinical time is 09:55
    known = http.get("/fhir/Observation", params={"patient": pid, "_as-known-at": "2020-01-01"}, headers=lab).json()
    assert known["total"] == 0  # nothing was known then
    page = http.get("/fhir/Observation", params={"patient": pid, "date": "le2026-11-23"}, headers=lab).json()
    assert page["total"] == 0

    assert http.get("/fhir/Encounter", params={"patient": pid}, headers=lab).status_code == 403
    visits = http.get("/fhir/Encounter", params={"patient": pid}, headers=viewer).json()
    assert visits["entry"][0]["resource"]["status"] == "in-progress"
    everything = http.get(f"/fhir/Patient/{pid}/$everything", headers=viewer).json()
    assert sorted(e["resource"]["resourceType"] for e in everything["entry"]) == ["Encounter", "Observation", "Patient"]

    for path, params, status, said in (
        ("/fhir/Observation", {"patient": pid, "cdoe": "x"}, 400, "unknown search parameter 'cdoe'"),
        ("/fhir/Observation", {"code": "x"}, 400, "needs patient="),
        ("/fhir/Observation", {"patient": pid, "_as-of": "yesterday"}, 400, "is not a time"),
        ("/fhir/Device", {}, 404, "does not serve Device"),
        (f"/fhir/Patient/{patient_id('GENHOSP|NOBODY')}", {}, 404, "no Patient with that id"),
        ("/fhir/nothing/here/at/all", {}, 404, "Not Found"),
    ):
        answer = http.get(path, params=params, headers=viewer)
        assert answer.status_code == status, (path, answer.text)
        assert said in answer.json()["issue"][0]["diagnostics"]
    assert http.get(f"/fhir/Patient/{pid}").status_code == 401
    assert (
        http.get(f"/fhir/Patient/{pid}", headers=_bearer("vgc_guess")).headers["www-authenticate"]
        == 'Bearer realm="vigil"'
    )

    # A rotated token works at once, and the old one no more; a revoked client's token never.
    config = data.parent / "http.toml"
    rotated = _bearer(_vigil(data, config, "client", "rotate", "viewer", "--days", "7").strip())
    assert http.get(f"/fhir/Patient/{pid}", headers=viewer).status_code == 401
    assert http.get(f"/fhir/Patient/{pid}", headers=rotated).status_code == 200
    _vigil(data, config, "client", "revoke", "viewer")
    assert http.get(f"/fhir/Patient/{pid}/$everything", headers=rotated).status_code == 401

    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    accesses = [
        (r.envelope.patient, e.user, e.action, e.outcome)
        for r in log_records(data)
        for e in r.envelope.events
        if isinstance(e, RecordAccessed) and e.user.startswith("client:")
    ]
    assert (KEY, "client:lab", "fhir_read:Patient", "allowed") in accesses
    assert (KEY, "client:lab", "fhir_read:Observation", "allowed") in accesses
    assert (KEY, "client:lab", "fhir_read:Encounter", "denied") in accesses
    assert (KEY, "client:viewer", "fhir_read:*", "allowed") in accesses
    assert any(user == "client:unknown" and outcome == "denied" for _p, user, _a, outcome in accesses)


def test_https_on_a_network_address_and_plain_http_refused_there(tmp_path: Path) -> None:
    """Off loopback HTTPS is required (the configuration says so in one line); with a certificate it serves."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "node.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "node.key"))
    plain = tmp_path / "plain.toml"
    plain.write_text('[http]\nlisten = "0.0.0.0:0"\n')
    refused = subprocess.run(
        [VIGIL, "--config", str(plain), "run", "--mllp", "127.0.0.1:0", "--data", str(tmp_path / "d0")],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert b"HTTPS is required there" in refused.stderr
    config = tmp_path / "https.toml"
    config.write_text('[http]\nlisten = "127.0.0.1:0"\ntls_cert_file = "node.pem"\ntls_key_file = "node.key"\n')
    with http_node(tmp_path / "data", config) as (_proc, _mllp, port):
        with httpx.Client(verify=ssl.create_default_context(cafile=tmp_path / "ca.pem"), timeout=30) as https:
            assert https.get(f"https://127.0.0.1:{port}/readyz").text == "ready\n"
        with pytest.raises(httpx.HTTPError), httpx.Client(timeout=5) as http:
            http.get(f"http://127.0.0.1:{port}/readyz")


def test_acks_over_mllp_and_http_never_share_a_control_id(tmp_path: Path, config: Path) -> None:
    """Each ACK's own MSH-10 is unique across the node's sources (MLLP and HTTP once counted apart from 1 each)."""
    data = tmp_path / "data"
    store = AuthStore.open_private(data)
    try:
        store.add_client(ApiClient("lab", ("system/*.write",), token_digest("vgc_t"), 0.0, "test"))
    finally:
        store.close()
    with http_node(data, config) as (_proc, mllp_port, port):
        with socket.create_connection(("127.0.0.1", mllp_port), timeout=30) as conn:
            over_mllp = exchange(conn, _critical("A1"), MLLPDecoder())
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            over_http = http.post("/hl7v2", content=_critical("A2"), headers=_bearer("vgc_t", **HL7)).content
    ids = [ack.split(b"\r")[0].split(b"|")[9] for ack in (over_mllp, over_http)]
    assert ids[0] != ids[1], ids
