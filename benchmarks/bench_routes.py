"""Delivering onward: how fast a route drains to one MLLP receiver, and whether a STAT result waits behind billing.

Everything is real processes: a `vigil run` node with a route, and the
downstream system, python-hl7's asyncio MLLP server (`tests/harness/mllp_receiver.py`),
which stamps the time each message arrives. Every figure comes from those
stamps, for Vigil and for the peer alike.

- **drain**: the receiver is down while the node accepts N messages (a file
  in its watched folder); then it comes up, and the route delivers the
  backlog: messages/s from the first arrival to the last, at 1, 2 and 8
  connections. The peer, python-hl7's own `mllp_send`, feeds the same
  messages from a file to a fresh receiver in the same run. This is also
  the catch-up after an outage: the backlog is what piled up while the
  downstream was away.
- **critical under a billing backlog**: the receiver is down while a file
  of DFT^P03 billing is accepted; it comes up, and while the backlog drains
  a probe sends critical results (OBX-8 = HH, patients of their own) to the
  node at 20/s. Delivery latency is send-to-node until arrival downstream.
  Once with the route's lanes (`order = "lanes"`), once first-in first-out
  (`order = "fifo"`, what other engines do), beside the same probe with no
  backlog (idle).

Issue 17's goal: critical delivery p99 under the backlog <= 2 x idle p99;
drain rate >= the peer's.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
from _harness import arguments, fail_if
from rich.console import Console
from rich.table import Table

from engine.core.feedgen import FeedMix, generate_feed
from engine.core.hl7 import read_header
from engine.core.mllp import Frame, MLLPDecoder, frame
from tests.harness.mllp_receiver import Receiver  # bin/bench puts the repository on the path
from tests.harness.node_process import node

ROOT = Path(__file__).resolve().parents[1]
_BILLING = FeedMix(0, 0, 0, 0, 0, 0, 1)
_CRITICAL = FeedMix(0, 0, 1, 0, 0, 0, 0)
_PROBE_RATE = 20.0


def _config(work: Path, port: int, *, connections: int, order: str) -> Path:
    route = [
        "",
        "[[routes]]",
        'name = "downstream"',
        f'destination = "mllp://127.0.0.1:{port}"',
        f"connections = {connections}",
        f'order = "{order}"',
        "retry_base_s = 0.05",
        "retry_max_s = 0.5",
        "",
    ]
    path = work / f"vigil-{order}-{connections}.toml"
    path.write_text((ROOT / "config.toml").read_text() + "\n".join(route))
    return path


def _drop(folder: Path, messages: list[bytes], timeout_s: float = 600) -> None:
    """A file into the watched folder; back once the node has accepted all of it (the file is in done/)."""
    temp = folder / "feed.hl7.tmp"
    temp.write_bytes(b"".join(messages))
    temp.rename(folder / "feed.hl7")
    deadline = time.monotonic() + timeout_s
    while not (folder / "done" / "feed.hl7").exists():
        fail_if((folder / "failed" / "feed.hl7").exists(), "the node refused part of the feed")
        fail_if(time.monotonic() > deadline, "the node did not take the feed in time")
        time.sleep(0.05)
    (folder / "done" / "feed.hl7").unlink()


def _wait_for(receiver: Receiver, control_ids: set[str], timeout_s: float) -> dict[str, float]:
    """Each control id's first arrival time at the receiver, once all have come."""
    deadline = time.monotonic() + timeout_s
    while True:
        arrived: dict[str, float] = {}
        for item in receiver.received():
            arrived.setdefault(item.control_id, item.at)
        if control_ids <= arrived.keys():
            return arrived
        fail_if(time.monotonic() > deadline, f"{len(control_ids - arrived.keys())} messages never arrived")
        time.sleep(0.05)


def _delivering(receiver: Receiver, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not receiver.received():
        fail_if(time.monotonic() > deadline, "the route did not reconnect")
        time.sleep(0.01)


def _control_id(raw: bytes) -> str:
    return read_header(raw).get(10).decode()


@contextlib.contextmanager
def _receiver(work: Path, name: str) -> Iterator[Receiver]:
    folder = work / name
    folder.mkdir()
    receiver = Receiver(folder)
    try:
        yield receiver
    finally:
        receiver.kill()


def _rate(arrived: dict[str, float]) -> float:
    times = sorted(arrived.values())
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


# -- drain ------------------------------------------------------------------------------


def _drain(work: Path, messages: list[bytes], connections: int) -> float:
    """The node accepts the messages while the receiver is down; then the receiver's arrival rate."""
    with _receiver(work, f"drain-{connections}") as receiver:
        receiver.start()
        receiver.kill()  # its port is known now: the route points at it, and nothing answers there yet
        drop = work / f"drop-drain-{connections}"
        drop.mkdir()
        config = _config(work, receiver.port, connections=connections, order="lanes")
        with node(work / f"data-drain-{connections}", "--watch", str(drop), config=config):
            _drop(drop, messages)
            receiver.start()
            arrived = _wait_for(receiver, {_control_id(m) for m in messages}, timeout_s=900)
    return _rate(arrived)


def _peer(work: Path, messages: list[bytes]) -> float:
    """python-hl7's `mllp_send` feeding the same messages to the same receiver."""
    with _receiver(work, "peer") as receiver:
        receiver.start()
        feed = work / "peer.mllp"
        feed.write_bytes(b"".join(frame(m) for m in messages))
        mllp_send = Path(sys.executable).parent / "mllp_send"
        subprocess.run(
            [str(mllp_send), "--file", str(feed), "--port", str(receiver.port), "-q", "127.0.0.1"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        arrived = _wait_for(receiver, {_control_id(m) for m in messages}, timeout_s=60)
    return _rate(arrived)


# -- critical under a backlog ------------------------------------------------------------


def _probe(port: int, feed: list[bytes], sent: dict[str, float]) -> None:
    """Critical results to the node at a steady rate; when each was sent (wall clock, as the receiver stamps)."""
    decoder = MLLPDecoder()
    interval = 1.0 / _PROBE_RATE
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        for n, raw in enumerate(feed):
            time.sleep(max(0.0, start + n * interval - time.perf_counter()))
            sent[_control_id(raw)] = time.time()
            conn.sendall(frame(raw))
            answered = False
            while not answered:
                answered = any(isinstance(i, Frame) for i in decoder.feed(conn.recv(65536)))


def _own_patients(raw: bytes) -> bytes:
    """A critical result for a patient with no billing in the backlog (its own would go first, in order)."""
    return raw.replace(b"|MRN", b"|STAT", 1)


def _critical(work: Path, order: str, backlog: list[bytes], probes: int) -> dict[str, Any]:
    """Critical delivery latency while `backlog` drains (none: idle)."""
    name = f"{order}-{len(backlog)}"
    feed = [_own_patients(m) for m in generate_feed(probes, seed=3, mix=_CRITICAL, id_prefix=f"K{name}-")]
    with _receiver(work, f"critical-{name}") as receiver:
        receiver.start()
        if backlog:
            receiver.kill()
        drop = work / f"drop-{name}"
        drop.mkdir()
        config = _config(work, receiver.port, connections=1, order=order)
        with node(work / f"data-{name}", "--watch", str(drop), config=config) as (_proc, port):
            if backlog:
                _drop(drop, backlog)
                receiver.start()
            else:  # the route connects at its first message: that one is not timed
                _probe(port, [_own_patients(generate_feed(1, seed=4, mix=_CRITICAL, id_prefix="W")[0])], {})
            _delivering(receiver)  # the route is connected: from here on it is isolation, not an outage
            started = time.time()
            sent: dict[str, float] = {}
            _probe(port, feed, sent)
            arrived = _wait_for(receiver, set(sent), timeout_s=900)
            if backlog:
                billing = _wait_for(receiver, {_control_id(m) for m in backlog}, timeout_s=900)
                drained_s = max(billing.values()) - started
    latencies = sorted((arrived[c] - sent[c]) * 1000 for c in sent)
    return {
        "order": order,
        "backlog": len(backlog),
        "p50_ms": _pct(latencies, 50),
        "p99_ms": _pct(latencies, 99),
        "max_ms": latencies[-1],
        "drained_s": round(drained_s, 1) if backlog else None,
    }


def _pct(ordered: list[float], q: float) -> float:
    return round(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))], 2)


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    drain_n, backlog_n, probes = (500, 1_500, 20) if args.quick else (20_000, 100_000, 200)
    console = Console(width=max(110, Console().width))
    work = Path(tempfile.mkdtemp(prefix="vigil-bench-routes-"))
    try:
        messages = generate_feed(drain_n, seed=11, id_prefix="D")
        peer = _peer(work, messages)
        drains = {k: _drain(work, messages, k) for k in (1, 2, 8)}
        backlog = generate_feed(backlog_n, seed=12, mix=_BILLING, id_prefix="B")
        idle = _critical(work, "lanes", [], probes)
        lanes = _critical(work, "lanes", backlog, probes)
        fifo = _critical(work, "fifo", backlog, probes)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = Table(title=f"Route drain to one MLLP receiver (python-hl7's asyncio server), {drain_n:,} messages")
    for column in ("sender", "messages/s", "÷ mllp_send"):
        table.add_column(column, justify="left" if column == "sender" else "right")
    table.add_row("python-hl7 mllp_send (1 connection)", f"{peer:,.0f}", "1.00")
    for k, rate in drains.items():
        table.add_row(f"Vigil route, backlog, {k} connection(s)", f"{rate:,.0f}", f"{rate / peer:.2f}")
    console.print(table)

    table = Table(title=f"Critical delivery while {backlog_n:,} billing messages drain to the same receiver")
    for column in ("route", "backlog", "p50 ms", "p99 ms", "max ms", "p99 ÷ idle", "backlog drained s"):
        table.add_column(column, justify="left" if column == "route" else "right")
    for row, label in ((idle, "idle"), (lanes, "lanes"), (fifo, "fifo")):
        ratio = row["p99_ms"] / idle["p99_ms"] if idle["p99_ms"] else float("nan")
        drained = "-" if row["drained_s"] is None else f"{row['drained_s']:.1f}"
        table.add_row(
            label,
            f"{row['backlog']:,}",
            f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
            f"{row['max_ms']:.1f}",
            f"{ratio:.2f}",
            drained,
        )
    console.print(table)
    goal = lanes["p99_ms"] <= 2 * idle["p99_ms"]
    console.print(f"critical p99 under the backlog <= 2 x idle: {'met' if goal else 'NOT met'}")
    if args.json is not None:
        doc = {
            "title": "bench_routes",
            "drain_messages": drain_n,
            "peer_mllp_send_per_s": round(peer, 1),
            "drain_per_s": {str(k): round(v, 1) for k, v in drains.items()},
            "critical": {"idle": idle, "lanes": lanes, "fifo": fifo},
            "goal_met": goal,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(doc)) + b"\n")


if __name__ == "__main__":
    main()
