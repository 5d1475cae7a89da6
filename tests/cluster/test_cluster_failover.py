"""Failover with real processes: three `nats-server` in a JetStream cluster, three `vigil run` nodes.

Senders feed every node over MLLP and retry like a hospital's interface
engine (a broken connection or AE: send again, to any live node). Nodes are
SIGKILLed (seeded: `VIGIL_CLUSTER_SEED` replays a run, `VIGIL_CLUSTER_KILLS`
sets how many), paused past their lease with SIGSTOP, and a NATS server is
killed. Every message a sender got AA for must be in the replicated log
exactly once, and in the log of the node that now serves its partition;
every partition must be served again; and no partition's subject may ever
take a write from an older epoch after a newer one (fencing).
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest

from engine.cluster import partition_of
from engine.cluster.replication import last_on_subject, read_partition
from engine.wal import open_wal
from tests.harness.cluster_harness import (
    Sender,
    VigilNode,
    cluster_log,
    cluster_status,
    message_id,
    vigil_cluster,
    wait_all_served,
    wait_shared,
)
from tests.harness.nats_server import NatsProcess, nats_cluster, nats_regions

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

PARTITIONS = 16
PATIENTS = 200


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[NatsProcess], list[VigilNode], str]]:
    with nats_cluster(tmp_path / "nats") as servers:
        urls = ",".join(s.url for s in servers)
        with vigil_cluster(tmp_path, urls) as nodes:
            wait_all_served(urls, PARTITIONS, {n.node_id for n in nodes})
            yield servers, nodes, urls


def _feed(nodes: list[VigilNode], total: int, senders: int = 4, tag: str = "C") -> list[Sender]:
    return [Sender(nodes, list(range(i, total, senders)), PATIENTS, tag=tag) for i in range(senders)]


def _run(senders: list[Sender]) -> list[threading.Thread]:
    threads = [threading.Thread(target=s.run, daemon=True) for s in senders]
    for t in threads:
        t.start()
    return threads


def _join(threads: list[threading.Thread], senders: list[Sender], limit_s: float = 180) -> None:
    deadline = time.monotonic() + limit_s
    for t in threads:
        t.join(timeout=max(0.1, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        for s in senders:
            s.stop.set()
        raise AssertionError("the senders did not finish: the cluster stopped taking messages")


def _check_exactly_once(urls: str, senders: list[Sender], tag: str = "C") -> list[dict[str, Any]]:
    """Every AA'd message in the replicated log exactly once; nothing in it twice."""
    rows = cluster_log(urls)
    counts = Counter(str(r["message_id"]) for r in rows)
    acked = {message_id(n, tag=tag) for s in senders for n in s.acked}
    assert set() == acked - set(counts), "acknowledged messages missing from the replicated log"
    assert [m for m, c in counts.items() if c > 1] == [], "messages replicated twice"
    return rows


def _check_owner_logs(nodes: list[VigilNode], urls: str, senders: list[Sender], tag: str = "C") -> None:
    """After a clean stop: each acknowledged message is in the local log of its partition's last owner."""
    owners = {m["node"]: set(m["serving"]) for m in cluster_status(urls)["members"]}  # type: ignore[union-attr, index]
    for n in nodes:
        n.stop()
    by_node: dict[str, set[str]] = {}
    for n in nodes:
        by_node[n.node_id] = set(anyio.run(_local_ids, n.data / "wal"))
    for s in senders:
        for number in s.acked:
            p = partition_of(f"GENHOSP|MRN{number % PATIENTS:06d}", PARTITIONS)
            owner = next(node for node, served in owners.items() if p in served)
            assert message_id(number, tag=tag) in by_node[owner]


async def _local_ids(wal_dir: Path) -> list[str]:
    async with open_wal(wal_dir) as wal:
        return [r.message_id for r in wal.read_from(1)]


def _no_session_failures(nodes: list[VigilNode]) -> None:
    """The cluster part restarts itself after any failure (the node goes on): in these runs it never had to."""
    for n in nodes:
        assert "cluster.session_failed" not in n.logs(), f"{n.node_id}'s cluster session failed"


def _epochs_never_go_back(urls: str) -> None:
    """Fencing: on every partition's subject, epochs only grow (no write of an older owner after a newer one)."""

    async def read() -> None:
        client = await nats.connect(urls.split(","))
        try:
            js = client.jetstream(timeout=10)
            for p in range(PARTITIONS):
                subject = f"vigil.log.{p}"
                seq, _ = await last_on_subject(js, "VIGIL_LOG", subject)
                epochs = [b.epoch for b in await read_partition(js, "VIGIL_LOG", subject, until_seq=seq)]
                assert epochs == sorted(epochs), f"partition {p}: epochs {epochs}"
        finally:
            await client.close()

    anyio.run(read)


def test_sigkill_a_node_again_and_again_loses_nothing_acknowledged(
    cluster: tuple[list[NatsProcess], list[VigilNode], str],
) -> None:
    """Seeded SIGKILLs under a steady feed: its partitions are served again, and nothing acknowledged is lost."""
    _servers, nodes, urls = cluster
    seed = int(os.environ.get("VIGIL_CLUSTER_SEED", random.randrange(1_000_000)))
    kills = int(os.environ.get("VIGIL_CLUSTER_KILLS", "5"))
    print(f"cluster failover: {kills} SIGKILLs, seed {seed} (VIGIL_CLUSTER_SEED={seed} replays)")
    rng = random.Random(seed)
    senders = _feed(nodes, 100_000)
    threads = _run(senders)
    takeovers = []
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.5, 2.0))
            victim = rng.choice(nodes)
            victim.kill()
            killed_at = time.monotonic()
            wait_all_served(urls, PARTITIONS, {n.node_id for n in nodes if n is not victim}, limit_s=30)
            takeovers.append(time.monotonic() - killed_at)
            victim.start()
        time.sleep(1.0)
    finally:
        for s in senders:
            s.stop.set()
    _join(threads, senders)
    acked = sum(len(s.acked) for s in senders)
    print(f"acknowledged {acked}; takeover (kill -> served, polled) max {max(takeovers):.2f} s")
    assert acked > 100
    _check_exactly_once(urls, senders)
    _epochs_never_go_back(urls)
    wait_all_served(urls, PARTITIONS, {n.node_id for n in nodes})
    _no_session_failures(nodes)
    _check_owner_logs(nodes, urls, senders)


def test_a_node_paused_past_its_lease_is_fenced_out(cluster: tuple[list[NatsProcess], list[VigilNode], str]) -> None:
    """SIGSTOP one node for longer than its lease: the others take its partitions; resumed, it writes none of them."""
    _servers, nodes, urls = cluster
    senders = _feed(nodes, 1500, tag="S")
    threads = _run(senders)
    time.sleep(1.0)
    paused = nodes[1]
    paused.signal(signal.SIGSTOP)
    wait_all_served(urls, PARTITIONS, {n.node_id for n in nodes if n is not paused}, limit_s=30)
    time.sleep(1.0)
    paused.signal(signal.SIGCONT)
    _join(threads, senders)
    _check_exactly_once(urls, senders, tag="S")
    _epochs_never_go_back(urls)
    assert "cluster.partition_lost" in paused.logs()
    wait_all_served(urls, PARTITIONS, {n.node_id for n in nodes})
    _no_session_failures(nodes)


def test_killing_a_nats_server_loses_nothing_acknowledged(
    cluster: tuple[list[NatsProcess], list[VigilNode], str],
) -> None:
    """A NATS server dies (with whatever stream leadership it held): the nodes go on over the other two."""
    servers, nodes, _urls = cluster
    senders = _feed(nodes, 1500, tag="N")
    threads = _run(senders)
    time.sleep(1.0)
    servers[0].kill()
    _join(threads, senders)
    survivors = ",".join(s.url for s in servers[1:])
    _check_exactly_once(survivors, senders, tag="N")
    wait_all_served(survivors, PARTITIONS, {n.node_id for n in nodes})


def test_two_regions_joined_by_a_gateway_share_partitions_and_survive_losing_one(tmp_path: Path) -> None:
    """Two NATS clusters (regions east and west) joined by a gateway; the stream and leases live in east.

    A node in each region, each connected to its own region's server: they share the partitions, and
    messages given to west for east's partitions cross the gateway. West is lost (its server and node
    killed): east serves every partition, and nothing acknowledged is lost.
    """
    with nats_regions(tmp_path / "nats", {"east": 2, "west": 1}) as regions:
        east = ",".join(s.url for s in regions["east"])
        west = regions["west"][0].url
        extra = 'placement = "east"'
        with vigil_cluster(tmp_path, east, 2, replicas=2, node_urls=[east, west], cluster_extra=extra) as nodes:
            wait_all_served(east, PARTITIONS, {"node0", "node1"})
            status = wait_shared(east, {"node0", "node1"})  # both regions serve a share
            assert str(status["stream"]["leader"]).startswith("east")  # type: ignore[index]
            senders = _feed([nodes[1]], 600, senders=2, tag="W")  # everything arrives in west
            _join(_run(senders), senders)
            regions["west"][0].kill()
            nodes[1].kill()
            taken = wait_all_served(east, PARTITIONS, {"node0"}, limit_s=30)
            after = _feed([nodes[0]], 300, senders=2, tag="E")
            _join(_run(after), after)
            _check_exactly_once(east, senders, tag="W")
            _check_exactly_once(east, after, tag="E")
            print(f"west lost: east served every partition after {taken:.2f} s (polled)")
            _no_session_failures(nodes[:1])
            assert "cluster.forward" not in nodes[1].logs()  # forwarding worked, never failed


def test_a_broker_outage_degrades_the_node_and_it_serves_again_when_the_broker_returns(tmp_path: Path) -> None:
    """Every NATS server down: the node stays up, stops serving within its lease (AE, never a silent AA), and
    when NATS returns it takes its partitions again; the senders finish and nothing acknowledged is lost."""
    with nats_cluster(tmp_path / "nats", size=1) as servers:
        url = servers[0].url
        with vigil_cluster(tmp_path, url, 1, replicas=1) as nodes:
            wait_all_served(url, PARTITIONS, {"node0"})
            senders = _feed(nodes, 1200, senders=2, tag="O")
            threads = _run(senders)
            time.sleep(1.0)
            servers[0].kill()
            before = sum(len(s.acked) for s in senders)
            time.sleep(4.0)  # twice the lease
            during = sum(len(s.acked) for s in senders) - before
            assert nodes[0].alive()
            assert during <= 2 * len(senders)  # at most what was in flight when the broker went
            servers[0].start()
            _join(threads, senders)
            _check_exactly_once(url, senders, tag="O")
            assert "cluster.partition_lost" in nodes[0].logs()
            assert nodes[0].alive()
