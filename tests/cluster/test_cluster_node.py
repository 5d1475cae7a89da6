"""A cluster node as operators see it: a record is read where its partition is served, and status says so.

Two real `vigil run` nodes over one real `nats-server`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cluster import partition_of
from tests.harness.cluster_harness import ROOT, VIGIL, Sender, cluster_status, vigil_cluster, wait_all_served
from tests.harness.nats_server import nats_server
from tests.harness.sessions import sign_in

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

PATIENT = 7  # lab_result(n, patient) for n % PATIENTS == 7
PATIENTS = 10


def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([VIGIL, *args], capture_output=True, timeout=120, check=False, cwd=ROOT)


def test_a_record_is_read_from_its_partitions_owner_and_another_node_names_it(tmp_path: Path) -> None:
    """Messages sent to one node reach their owners (forwarded); the owner answers `vigil patient`, the other
    node refuses in one line naming the owner (its copy may be behind); `vigil status` shows the cluster."""
    with nats_server(tmp_path / "nats") as url, vigil_cluster(tmp_path, url, 2, replicas=1) as nodes:
        wait_all_served(url, 16, {"node0", "node1"})
        sender = Sender([nodes[0]], list(range(40)), PATIENTS, tag="Q")
        sender.run()
        assert len(sender.acked) == 40
        key = f"GENHOSP|MRN{PATIENT:06d}"
        serving = {m["node"]: m["serving"] for m in cluster_status(url)["members"]}  # type: ignore[union-attr, index]
        owner = next(n for n in nodes if partition_of(key, 16) in serving[n.node_id])
        other = next(n for n in nodes if n is not owner)

        sign_in(owner.data, "dr.osei")
        asked = _cli("patient", key, "--data", str(owner.data), "--json")
        assert asked.returncode == 0, asked.stderr.decode()
        record = json.loads(asked.stdout)
        assert len(record["results"][0]["versions"]) == 4  # the four messages of patient 7, all on the owner
        status = json.loads(_cli("status", "--data", str(owner.data), "--json").stdout)
        assert sorted(serving[owner.node_id]) == status["cluster"]["serving"]
        assert status["cluster"]["members"] == ["node0", "node1"]
        owners = {p: owner for p, owner, _epoch in status["cluster"]["owners"]}  # the console's partitions view
        assert sorted(owners) == list(range(16))
        assert {p for p, o in owners.items() if o == owner.node_id} == set(serving[owner.node_id])

        sign_in(other.data, "dr.osei")
        refused = _cli("patient", key, "--data", str(other.data))
        assert refused.returncode != 0
        message = refused.stderr.decode().strip()
        assert f"served by node {owner.node_id}: ask there" in message
        assert len(message.splitlines()) == 1
