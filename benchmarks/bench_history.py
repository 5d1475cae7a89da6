"""Whether a message costs the same late in a long run as early: CPU per message per tenth of a skewed feed.

A real `vigil run` node takes a hospital-shaped feed over MLLP from a load
process (8 connections, each waiting for its ACK):
- a few patients with most of the traffic (tens of thousands of messages
  each in the full run), the rest spread over a pool of known patients;
- a third of the messages for patients never seen before;
- an ADT^A40 every 1,000 messages, merging one pool patient into another
  (now and then a heavy patient into another: its whole history moves).

The node's CPU (user + system, from /proc) is read at every tenth of the
acknowledged messages: CPU ms per message per tenth, and the last tenth
against the first (issue 21's goal: <= 1.1). Then two short runs of new
patients only and known patients only give what a first-seen patient costs
against a known one (goal: <= 1.2).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
from _harness import arguments, fail_if
from rich.console import Console
from rich.table import Table

from engine.core.mllp import Frame, MLLPDecoder, frame
from tests.harness.node_process import node  # bin/bench puts the repository on the path

_CONNECTIONS = 8
_HEAVY = 5
_MERGE_EVERY = 1_000
_TICKS = os.sysconf("SC_CLK_TCK")


def _oru(n: int, patient: str) -> bytes:
    msh = f"MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261124101500||ORU^R01^ORU_R01|H{n:09d}|P|2.5.1"
    pid = f"PID|1||{patient}^^^GENHOSP^MR||Doe^Jan||19700101|F"
    obx = "OBX|1|NM|2823-3^Potassium^LN||4.1|mmol/L|3.5-5.1|N|||F"
    return f"{msh}\r{pid}\rOBR|1|P{n}|F{n}|80048^BMP^CPT\r{obx}\r".encode()


def _merge(n: int, surviving: str, merged: str) -> bytes:
    msh = f"MSH|^~\\&|ADT|GENHOSP|VIGIL|GENHOSP|20261124101500||ADT^A40^ADT_A39|H{n:09d}|P|2.5.1"
    return (
        f"{msh}\rEVN|A40|20261124101500\rPID|1||{surviving}^^^GENHOSP^MR||Doe^Jan\rMRG|{merged}^^^GENHOSP^MR\r"
    ).encode()


def skewed_feed(count: int, pool: int, seed: int = 21) -> list[bytes]:
    """The feed described above, deterministic for `seed`."""
    rng = random.Random(seed)  # synthetic data, not security
    heavy = [f"HV{i:04d}" for i in range(_HEAVY)]
    out = []
    for n in range(count):
        if n and n % _MERGE_EVERY == 0:
            merged = rng.choice(heavy) if n % (10 * _MERGE_EVERY) == 0 else f"PL{rng.randrange(pool):07d}"
            out.append(_merge(n, f"PL{rng.randrange(pool):07d}", merged))
            continue
        roll = rng.random()
        if roll < 1 / 3:
            patient = f"NEW{n:09d}"  # never seen before, never seen again
        elif roll < 1 / 3 + 0.3:
            patient = rng.choice(heavy)
        else:
            patient = f"PL{rng.randrange(pool):07d}"
        out.append(_oru(n, patient))
    return out


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


class _Load:
    """K connections, each sending its share in order and waiting for each ACK; counts what is acknowledged."""

    def __init__(self, port: int, feed: list[bytes]) -> None:
        self.port = port
        self.shares = [feed[i::_CONNECTIONS] for i in range(_CONNECTIONS)]
        self.acked = 0
        self.refused = 0
        self._lock = threading.Lock()

    def run(self) -> None:
        threads = [threading.Thread(target=self._send, args=(share,), daemon=True) for share in self.shares]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _send(self, share: list[bytes]) -> None:
        decoder = MLLPDecoder(1 << 20)
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as conn:
            for raw in share:
                conn.sendall(frame(raw))
                answer = b""
                while not answer:
                    data = conn.recv(65536)
                    fail_if(not data, "the node closed a connection")
                    answer = next((i.payload for i in decoder.feed(data) if isinstance(i, Frame)), b"")
                with self._lock:
                    self.acked += 1
                    self.refused += b"MSA|AA|" not in answer and b"MSA|CA|" not in answer


def run_tenths(work: Path, feed: list[bytes]) -> list[dict[str, float]]:
    """CPU ms per message over each tenth of the feed, as acknowledged."""
    with node(work / "data") as (proc, port):
        load = _Load(port, feed)
        sender = threading.Thread(target=load.run, daemon=True)
        started_cpu, started = _cpu_s(proc.pid), time.monotonic()
        sender.start()
        tenths = []
        step = len(feed) // 10
        mark_cpu, mark_t, mark_n = started_cpu, started, 0
        for k in range(1, 11):
            target = step * k if k < 10 else len(feed)
            while load.acked < target:
                fail_if(not sender.is_alive() and load.acked < target, "the load stopped early")
                time.sleep(0.005)
            cpu, now, done = _cpu_s(proc.pid), time.monotonic(), load.acked
            messages = max(1, done - mark_n)
            tenths.append(
                {"tenth": k, "cpu_ms_per_msg": (cpu - mark_cpu) * 1000 / messages, "per_s": messages / (now - mark_t)}
            )
            mark_cpu, mark_t, mark_n = cpu, now, done
        sender.join()
        fail_if(load.refused > 0, f"{load.refused} messages were not accepted")
    return tenths


def first_seen_cost(work: Path, count: int) -> tuple[float, float]:
    """CPU ms per message for patients never seen before, and for a few known ones, run alike."""
    new = [_oru(n, f"FS{n:09d}") for n in range(count)]
    known = [_oru(count + n, f"KN{n % 50:04d}") for n in range(count)]
    costs = []
    for name, feed in (("new", new), ("known", known)):
        tenths = run_tenths(work / name, feed)
        costs.append(sum(t["cpu_ms_per_msg"] for t in tenths[2:]) / len(tenths[2:]))  # past the warm-up
    return costs[0], costs[1]


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    count, pool, side = (6_000, 500, 2_000) if args.quick else (1_000_000, 50_000, 20_000)
    work = Path(tempfile.mkdtemp(prefix="vigil-bench-history-"))
    try:
        tenths = run_tenths(work / "skewed", skewed_feed(count, pool))
        new, known = first_seen_cost(work, side)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    console = Console(width=max(100, Console().width))
    table = Table(title=f"CPU per message through a {count:,}-message skewed feed (8 MLLP connections)")
    for column in ("tenth", "CPU ms / message", "messages/s"):
        table.add_column(column, justify="right")
    for t in tenths:
        table.add_row(str(t["tenth"]), f"{t['cpu_ms_per_msg']:.3f}", f"{t['per_s']:,.0f}")
    console.print(table)
    flat = tenths[-1]["cpu_ms_per_msg"] / tenths[0]["cpu_ms_per_msg"]
    console.print(f"last tenth / first tenth: {flat:.2f} (goal <= 1.1)")
    console.print(f"first-seen patient {new:.3f} ms, known {known:.3f} ms: {new / known:.2f}x (goal <= 1.2)")
    if args.json is not None:
        doc: dict[str, Any] = {
            "title": "bench_history",
            "messages": count,
            "tenths": tenths,
            "last_over_first": round(flat, 3),
            "first_seen_ms": round(new, 4),
            "known_ms": round(known, 4),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(doc)) + b"\n")


if __name__ == "__main__":
    main()
