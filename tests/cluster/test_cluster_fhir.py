"""FHIR reads in a cluster: any node answers, as its partition's owner has the record.

Behind a load balancer a read comes to any node; the node that does not own
the patient's partition asks the owner over NATS (the read was allowed and
audited where it came in), and answers as the owner would: the same
resources, as of any moment. Two real `vigil run` nodes with HTTP on, one
real nats-server.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from engine.auth import Role
from engine.cluster import partition_of
from engine.core.mllp import MLLPDecoder
from engine.core.model import RecordAccessed
from engine.web import patient_id
from tests.harness.cluster_harness import cluster_status, wait_all_served
from tests.harness.helpers import hl7
from tests.harness.nats_server import nats_server
from tests.harness.node_process import ROOT, VIGIL, exchange, http_node, log_records
from tests.harness.sessions import sign_in

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

_CONFIG = '[http]\nlisten = "127.0.0.1:0"\n[cluster]\nreplicas = 1\nlease_ttl_s = 2.0\nrenew_interval_s = 0.4\n'
KEY = "GENHOSP|MRN31"


def _result(n: int, value: str) -> bytes:
    msh = f"MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|2026120608{n:02d}00||ORU^R01^ORU_R01|FH{n}|P|2.5.1"
    return hl7(
        msh,
        "PID|1||MRN31^^^GENHOSP^MR||Roe^Ann||19800101|F",
        "OBR|1|P7|F7|2823-3^K^LN|||20261206080000",
        f"OBX|1|NM|2823-3^Potassium^LN||{value}|mmol/L|3.5-5.1|{'HH' if float(value) > 6 else 'N'}|||F|||20261206080000",
    )


def _token(data: Path, config: Path) -> str:
    sign_in(data, "adm", Role.ADMINISTRATOR, config=config)
    proc = subprocess.run(
        [VIGIL, "--config", str(config), "client", "add", "ehr", "--scope", "system/*.read", "--data", str(data)],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    return proc.stdout.decode().strip()


def test_a_read_that_comes_to_the_other_node_is_answered_with_the_owners_record(tmp_path: Path) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(_CONFIG)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(nats_server(tmp_path / "nats"))
        nodes = [
            stack.enter_context(http_node(tmp_path / name, config, "--nats", url, "--node-id", name))
            for name in ("node0", "node1")
        ]
        wait_all_served(url, 16, {"node0", "node1"})
        serving = {m["node"]: m["serving"] for m in cluster_status(url)["members"]}  # type: ignore[union-attr, index]
        owner = next(i for i, name in enumerate(("node0", "node1")) if partition_of(KEY, 16) in serving[name])
        other = 1 - owner
        with socket.create_connection(("127.0.0.1", nodes[other][1]), timeout=30) as conn:  # forwarded to the owner
            acks = [
                exchange(conn, _result(n, v), MLLPDecoder()).split(b"\r")[1][:6] for n, v in ((1, "6.9"), (2, "4.2"))
            ]
        assert acks == [b"MSA|AA", b"MSA|AA"]

        answers = []
        for index in (owner, other):
            data = tmp_path / f"node{index}"
            headers = {"Authorization": f"Bearer {_token(data, config)}"}
            with httpx.Client(base_url=f"http://127.0.0.1:{nodes[index][2]}", timeout=30, headers=headers) as http:
                pid = patient_id(KEY)
                patient = http.get(f"/fhir/Patient/{pid}")
                assert patient.status_code == 200, patient.text
                now = http.get("/fhir/Observation", params={"patient": pid}).json()
                before = http.get(
                    "/fhir/Observation", params={"patient": pid, "_as-known-at": "2000-01-01T00:00:00Z"}
                ).json()
                answers.append(
                    (patient.json(), [e["resource"]["valueQuantity"]["value"] for e in now["entry"]], before)
                )
        assert answers[0][0] == answers[1][0]  # the same Patient from either node
        assert answers[0][1] == answers[1][1] == [4.2]  # the corrected value, the owner's current record
        assert answers[1][2].get("total", 0) == 0  # as known long before: nothing, asked of the owner too
        nodes[other][0].terminate()
        nodes[other][0].wait(timeout=30)
        audited = [
            e
            for r in log_records(tmp_path / f"node{other}")
            for e in r.envelope.events
            if isinstance(e, RecordAccessed) and e.user == "client:ehr"
        ]
        assert audited, "the read was not audited where it came in"
