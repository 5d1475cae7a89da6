"""Real `vigil run` cluster nodes over a real NATS cluster, and MLLP senders that retry like a hospital's.

Shared by the failover tests and `benchmarks/bench_cluster.py`. Everything
is a real process on loopback: nodes are killed with real signals.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.hl7 import parse
from engine.core.mllp import Frame, MLLPDecoder, frame
from tests.harness.helpers import hl7

ROOT = Path(__file__).resolve().parents[2]
VIGIL = str(ROOT / "bin" / "vigil")

# Short leases so a takeover is quick; everything else the defaults.
CLUSTER_CONFIG = """
[node]
stop_deadline_s = 5.0
[mllp]
ack_timeout_s = 10.0
[cluster]
replicas = {replicas}
lease_ttl_s = 2.0
renew_interval_s = 0.4
publish_timeout_s = 2.0
forward_timeout_s = 5.0
[cluster.ack]
critical = "cluster"
standard = "cluster"
batch = "cluster"
"""


def lab_result(n: int, patient: int, *, tag: str = "C") -> bytes:
    """An ORU^R01 for one of a few hundred patients, control id unique by `n` (and `tag`)."""
    msh = f"MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261124101500||ORU^R01^ORU_R01|{tag}{n:07d}|P|2.5.1"
    pid = f"PID|1||MRN{patient:06d}^^^GENHOSP^MR||Doe^Jan||19700101|F"
    return hl7(msh, pid, "OBR|1|P1|F1|80048^BMP^CPT", "OBX|1|NM|2823-3^K^LN||4.1|mmol/L|3.5-5.1|N|||F")


def message_id(n: int, *, tag: str = "C") -> str:
    return f"hl7:LAB|GENHOSP|{tag}{n:07d}"


@dataclass
class VigilNode:
    """One `vigil run --mllp --nats` process."""

    index: int
    data: Path
    config: Path
    urls: str
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    starts: int = 0

    @property
    def node_id(self) -> str:
        return f"node{self.index}"

    def start(self) -> None:
        self.starts += 1
        log = (self.data.parent / f"{self.node_id}.{self.starts}.log").open("wb")
        args = [VIGIL, "--config", str(self.config), "run", "--mllp", "127.0.0.1:0", "--data", str(self.data)]
        if self.urls:  # without: a single node on the embedded default (a benchmark's baseline)
            args += ["--nats", self.urls, "--node-id", self.node_id]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
        log.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert "listening on" in line, f"{self.node_id} did not start: {line!r}"
        self.port = int(line.rsplit(":", 1)[1].split()[0])

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.data.parent.glob(f"{self.node_id}.*.log")))


@contextmanager
def vigil_cluster(
    base: Path,
    urls: str,
    size: int = 3,
    *,
    replicas: int = 3,
    node_urls: list[str] | None = None,
    cluster_extra: str = "",
) -> Iterator[list[VigilNode]]:
    """`size` nodes joined over `urls` (or each over its own, `node_urls`); each stopped at the end."""
    config = base / "cluster.toml"
    config.write_text(
        CLUSTER_CONFIG.format(replicas=replicas).replace("[cluster.ack]", f"{cluster_extra}\n[cluster.ack]")
    )
    nodes = [VigilNode(i, base / f"node{i}" / "data", config, node_urls[i] if node_urls else urls) for i in range(size)]
    try:
        for n in nodes:
            n.data.parent.mkdir(parents=True, exist_ok=True)
            n.start()
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def cluster_status(urls: str) -> dict[str, object]:
    out = subprocess.run(
        [VIGIL, "cluster", "status", "--nats", urls, "--json"], capture_output=True, timeout=60, check=False, cwd=ROOT
    )
    assert out.returncode == 0, f"vigil cluster status failed: {out.stderr.decode()[-500:]}"
    return dict(json.loads(out.stdout))


def cluster_log(urls: str, *, limit_s: float = 60) -> list[dict[str, object]]:
    """The replicated log (`vigil cluster log --json`), asked again while the broker is still electing leaders."""
    deadline = time.monotonic() + limit_s
    while True:
        out = subprocess.run(
            [VIGIL, "cluster", "log", "--nats", urls, "--json"], capture_output=True, timeout=120, check=False, cwd=ROOT
        )
        if out.returncode == 0:
            return [json.loads(line) for line in out.stdout.splitlines()]
        assert time.monotonic() < deadline, f"vigil cluster log failed: {out.stderr.decode()[-500:]}"
        time.sleep(0.5)


def wait_all_served(urls: str, partitions: int, live: set[str], *, limit_s: float = 60) -> float:
    """Wait until every partition is served by a live node (heartbeats say so); the seconds it took."""
    started = time.monotonic()
    while True:
        try:
            status = cluster_status(urls)
        except AssertionError:  # the broker is not ready yet (leaders being elected): ask again
            status = {"members": []}
        members = status["members"]
        assert isinstance(members, list)
        served = {p for m in members if m["node"] in live and m["heartbeat_age_s"] < 3 for p in m["serving"]}
        if len(served) == partitions:
            return time.monotonic() - started
        if time.monotonic() - started > limit_s:
            raise AssertionError(f"only {sorted(served)} of {partitions} partitions served after {limit_s} s")
        time.sleep(0.2)


def wait_shared(urls: str, live: set[str], *, limit_s: float = 30) -> dict[str, object]:
    """Wait until every live node serves some partitions (a joiner gets its share by handover, a moment after
    the first node took them all); the status that shows it."""
    deadline = time.monotonic() + limit_s
    while True:
        status = cluster_status(urls)
        members = status["members"]
        assert isinstance(members, list)
        if {m["node"] for m in members if m["serving"]} >= live:
            return status
        assert time.monotonic() < deadline, f"the partitions were not shared by {sorted(live)}: {members}"
        time.sleep(0.2)


@dataclass
class Sender:
    """One MLLP sender: sends its messages in order, each until an AA; a dead node means another node.

    Records what was acknowledged (AA) and what it was told to retry; what a
    hospital's interface engine does when a connection breaks or AE comes back.
    """

    nodes: list[VigilNode]
    numbers: list[int]
    patients: int
    tag: str = "C"
    acked: list[int] = field(default_factory=list)
    retries: int = 0
    ack_ms: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def run(self) -> None:
        conn: socket.socket | None = None
        decoder = MLLPDecoder(1 << 20)
        for n in self.numbers:
            payload = frame(lab_result(n, n % self.patients, tag=self.tag))
            while not self.stop.is_set():
                try:
                    if conn is None:
                        conn, decoder = self._connect(), MLLPDecoder(1 << 20)
                    began = time.perf_counter()
                    conn.sendall(payload)
                    code = self._ack(conn, decoder)
                except OSError:
                    if conn is not None:
                        conn.close()
                    conn = None
                    self.retries += 1
                    time.sleep(0.05)
                    continue
                if code == "AA":
                    self.acked.append(n)
                    self.ack_ms.append((time.perf_counter() - began) * 1000)
                    break
                self.retries += 1
                time.sleep(0.05)
            if self.stop.is_set():
                break
        if conn is not None:
            conn.close()

    def _connect(self) -> socket.socket:
        live = [n for n in self.nodes if n.alive() and n.port]
        if not live:
            raise OSError("no live node")
        target = self.rng.choice(live)
        conn = socket.create_connection(("127.0.0.1", target.port), timeout=15)
        conn.settimeout(15)
        return conn

    @staticmethod
    def _ack(conn: socket.socket, decoder: MLLPDecoder) -> str:
        while True:
            data = conn.recv(65536)
            if not data:
                raise OSError("closed before the ACK")
            for item in decoder.feed(data):
                if isinstance(item, Frame):
                    return str(parse(item.payload).get("MSA-1"))
