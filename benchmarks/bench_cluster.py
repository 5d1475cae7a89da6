"""How much does a 3-node cluster take vs 1 node, and how long from a node's death to its partitions served again?

Everything is real: three `nats-server` in a JetStream cluster (R3, fsync on
every write) and `vigil run` processes, killed with SIGKILL. MLLP senders
are threads in this process that send, wait for the ACK, and retry on AE or
a broken connection (to another live node), as a hospital's interface engine
does. Every message counted was acknowledged only once durable in the
owner's log *and* in the stream (`ack = "cluster"` for every lane).

Takeover time is from the SIGKILL to the moment the survivors' heartbeats
say they serve every partition (polled every 50 ms over NATS; heartbeats are
written every `renew_interval_s`, 0.4 s). With the stream leader's NATS
server killed at the same moment, JetStream must also elect new leaders.
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
from _harness import arguments, fail_if
from rich.console import Console
from rich.table import Table

from engine.cluster import read_members, read_stream
from engine.infra.config import ClusterConfig
from tests.harness.cluster_harness import Sender, VigilNode, vigil_cluster  # bin/bench puts the repository on the path
from tests.harness.nats_server import NatsProcess, nats_cluster

PARTITIONS = 16
CONFIG = ClusterConfig(enabled=True)


async def _status(urls: str) -> tuple[list[Any], Any]:
    client = await nats.connect(urls.split(","), connect_timeout=2, allow_reconnect=False)
    try:
        js = client.jetstream(timeout=2)
        return await read_members(js, CONFIG), await read_stream(js, CONFIG)
    finally:
        await client.close()


def _served(urls: str, live: set[str]) -> set[int]:
    try:
        members, _ = anyio.run(_status, urls)
    except Exception:  # noqa: BLE001 -- the broker is electing leaders: nothing is served yet
        return set()
    return {p for m in members if m.node in live and m.heartbeat_age_s < 2.0 for p in m.serving}


def _until_served(urls: str, live: set[str], limit_s: float = 60) -> float:
    started = time.monotonic()
    while len(_served(urls, live)) < PARTITIONS:
        fail_if(time.monotonic() - started > limit_s, f"partitions not served within {limit_s} s")
        time.sleep(0.05)
    return time.monotonic() - started


def _throughput(base: Path, nodes_count: int, senders_count: int, seconds: float) -> dict[str, Any]:
    """Acknowledged messages per second with `senders_count` connections spread over `nodes_count` nodes.

    `nodes_count` 0: one node without a cluster (no NATS at all), the baseline.
    """
    with nats_cluster(base / "nats") as servers:
        urls = ",".join(s.url for s in servers) if nodes_count else ""
        with vigil_cluster(base, urls, max(1, nodes_count)) as nodes:
            if nodes_count:
                _until_served(urls, {n.node_id for n in nodes})
            senders = [
                Sender(nodes, list(range(i, 10_000_000, senders_count)), 500, tag=f"T{nodes_count}")
                for i in range(senders_count)
            ]
            threads = [threading.Thread(target=s.run, daemon=True) for s in senders]
            for t in threads:
                t.start()
            time.sleep(1.0)  # warm up
            before = sum(len(s.acked) for s in senders)
            t0 = time.monotonic()
            time.sleep(seconds)
            done = sum(len(s.acked) for s in senders) - before
            elapsed = time.monotonic() - t0
            latencies = sorted(x for s in senders for x in s.ack_ms[-2000:])
            for s in senders:
                s.stop.set()
            for t in threads:
                t.join(timeout=30)
    p50 = statistics.median(latencies) if latencies else 0.0
    p99 = latencies[int(len(latencies) * 0.99) - 1] if len(latencies) > 100 else 0.0
    return {"nodes": nodes_count, "connections": senders_count, "per_s": done / elapsed, "p50_ms": p50, "p99_ms": p99}


def _kills(base: Path, kills: int, leader_kills: int, seed: int) -> dict[str, Any]:
    """SIGKILL a node `kills` times (then with the stream leader's server `leader_kills` times); takeover times."""
    rng = random.Random(seed)
    node_only: list[float] = []
    with_leader: list[float] = []
    with nats_cluster(base / "nats") as servers:
        urls = ",".join(s.url for s in servers)
        with vigil_cluster(base, urls) as nodes:
            all_ids = {n.node_id for n in nodes}
            _until_served(urls, all_ids)
            senders = [Sender(nodes, list(range(i, 10_000_000, 4)), 500, tag="K") for i in range(4)]
            threads = [threading.Thread(target=s.run, daemon=True) for s in senders]
            for t in threads:
                t.start()
            for i in range(kills + leader_kills):
                victim = rng.choice(nodes)
                server = _leader(urls, servers) if i >= kills else None
                killed_at = time.monotonic()
                victim.kill()
                if server is not None:
                    server.kill()
                live_urls = ",".join(s.url for s in servers if s is not server)
                _until_served(live_urls, all_ids - {victim.node_id})
                (with_leader if server is not None else node_only).append(time.monotonic() - killed_at)
                victim.start()
                if server is not None:
                    server.start()
                _until_served(urls, all_ids)
                _until_share(urls, victim)
            for s in senders:
                s.stop.set()
            for t in threads:
                t.join(timeout=30)
            acked = sum(len(s.acked) for s in senders)
    return {"node_only_s": node_only, "with_stream_leader_s": with_leader, "acked": acked}


def _leader(urls: str, servers: list[NatsProcess]) -> NatsProcess:
    _, stream = anyio.run(_status, urls)
    name = stream.leader if stream is not None else "n0"
    return servers[int(name[1:])] if name and name[1:].isdigit() else servers[0]


def _until_share(urls: str, node: VigilNode, limit_s: float = 60) -> None:
    """Wait until a restarted node serves its share again (so the next kill meets a whole cluster)."""
    started = time.monotonic()
    while len(_served(urls, {node.node_id})) < PARTITIONS // 3:
        fail_if(time.monotonic() - started > limit_s, f"{node.node_id} got no share back")
        time.sleep(0.1)


def main() -> None:
    args = arguments(__doc__.splitlines()[0] if __doc__ else "bench_cluster")
    # At --quick (CI's smoke run, under its 10 minutes): enough to show each part runs.
    seconds = 2.0 if args.quick else 10.0
    kills, leader_kills = (1, 1) if args.quick else (10, 3)
    seed = 20261127
    base = Path(tempfile.mkdtemp(prefix="vigil-bench-cluster-"))
    try:
        rows = [
            _throughput(base / "embedded", 0, 16, seconds),
            _throughput(base / "one", 1, 16, seconds),
            _throughput(base / "three", 3, 16, seconds),
        ]
        takeover = _kills(base / "kills", kills, leader_kills, seed)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    fail_if(any(r["per_s"] <= 0 for r in rows), "no message acknowledged")
    ratio = rows[2]["per_s"] / rows[1]["per_s"]
    replication_cost = rows[1]["per_s"] / rows[0]["per_s"]
    console = Console(width=max(100, Console().width))
    table = Table(title="Cluster throughput: R3 stream, ack after local fsync and the stream's ack (all lanes)")
    for name in ("nodes", "MLLP connections", "acknowledged/s", "ACK p50 ms", "ACK p99 ms"):
        table.add_column(name, justify="right")
    for r in rows:
        cells = (f"{r['per_s']:,.0f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}")
        label = str(r["nodes"]) if r["nodes"] else "1, no cluster"
        table.add_row(label, str(r["connections"]), *cells)
    console.print(table)
    console.print(f"3 nodes / 1 node: [bold]{ratio:.2f}x[/] (all on this machine's 2 cores, with the 3 NATS servers)")
    console.print(f"1 clustered node / 1 node without a cluster: [bold]{replication_cost:.2f}x[/] (the cost of R3)")
    kills_table = Table(title=f"Takeover: SIGKILL to every partition served again (seed {seed})")
    for name in ("what died", "kills", "p50 s", "max s"):
        kills_table.add_column(name, justify="right")
    for label, key in (("a node", "node_only_s"), ("a node + the stream leader's NATS server", "with_stream_leader_s")):
        times = takeover[key]
        if times:
            kills_table.add_row(label, str(len(times)), f"{statistics.median(times):.2f}", f"{max(times):.2f}")
    console.print(kills_table)
    console.print(f"messages acknowledged during the kills: {takeover['acked']:,}")
    if args.json is not None:
        doc = {
            "throughput": rows,
            "three_vs_one": round(ratio, 3),
            "clustered_vs_embedded": round(replication_cost, 3),
            "takeover": takeover,
            "seed": seed,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(doc)) + b"\n")


if __name__ == "__main__":
    main()
