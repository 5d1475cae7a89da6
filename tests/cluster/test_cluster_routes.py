"""Routes in a cluster: each partition's messages are delivered by its owner, and a takeover goes on from
where the dead owner's route had got to, instead of sending the partition's history again.

Two real `vigil run` nodes over one real `nats-server`, delivering to python-hl7's MLLP server.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.harness.cluster_harness import Sender, vigil_cluster, wait_all_served
from tests.harness.mllp_receiver import Receiver
from tests.harness.nats_server import nats_server

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

PATIENTS = 10


def _route(port: int) -> str:
    return (
        "route_progress_interval_s = 0.2\n"
        f'\n[[routes]]\nname = "ehr"\ndestination = "mllp://127.0.0.1:{port}"\n'
        "connections = 2\nretry_base_s = 0.05\nretry_max_s = 0.2\n"
    )


def _wait_distinct(receiver: Receiver, count: int, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while len({r.control_id for r in receiver.received()}) < count:
        assert time.monotonic() < deadline, f"{len({r.control_id for r in receiver.received()})} of {count} arrived"
        time.sleep(0.05)


def test_a_takeover_delivers_what_the_dead_owner_had_not_and_nothing_it_had(tmp_path: Path) -> None:
    downstream = tmp_path / "downstream"
    downstream.mkdir()
    receiver = Receiver(downstream)
    receiver.start()
    try:
        with (
            nats_server(tmp_path / "nats") as url,
            vigil_cluster(tmp_path, url, 2, replicas=1, cluster_extra=_route(receiver.port)) as nodes,
        ):
            wait_all_served(url, 16, {"node0", "node1"})
            first = Sender([nodes[0]], list(range(60)), PATIENTS, tag="A")
            first.run()
            assert len(first.acked) == 60
            _wait_distinct(receiver, 60)  # each owner delivered its partitions' messages
            time.sleep(1.0)  # several progress rounds: node1's route position is in the cluster
            nodes[1].kill()
            wait_all_served(url, 16, {"node0"})
            second = Sender([nodes[0]], list(range(10)), PATIENTS, tag="B")
            second.run()
            _wait_distinct(receiver, 70)
            time.sleep(1.5)  # anything node0 was going to send again has been sent by now
        counts = Counter(r.control_id for r in receiver.received())
    finally:
        receiver.kill()
    assert len(counts) == 70
    assert [c for c, n in counts.items() if n > 1] == []  # node1 had delivered them all: none again
