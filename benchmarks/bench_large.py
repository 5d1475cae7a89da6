"""How long does a critical result wait while large messages arrive, and how much memory do they leave behind?

A real `vigil run` process; one connection sends critical results (OBX-8 =
HH) at 50 a second; after an idle second, another process at a lower CPU
priority sends large ORUs (full size: 8.9 MB, 150,000 OBX each) one after
another. Two contenders in the same run: large messages classified and
parsed in a parse worker (`ingest.large_message_bytes`, the default) and in
the event loop (the limit set out of reach: how it was). Rows: the critical
ACK's p50, p99 and worst while idle and while the large messages arrive, and
the node's resident memory before, right after (the patient's actor still
holds its record of every result: live state), and once it settles, that
actor passivated (`actors.idle_timeout_s` = 1 s here) and the heap trimmed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
VIGIL = str(ROOT / "bin" / "vigil")
sys.path.insert(0, str(ROOT))

from benchmarks._harness import arguments  # noqa: E402 -- after the path is set
from engine.core.mllp import Frame, MLLPDecoder, frame  # noqa: E402

_SEND_LARGE = "--send-large"  # the argument that makes this script the large messages' sender process


def _oru(control: str, obx_count: int, flag: str = "N", mrn: str = "MRN42") -> bytes:
    msh = f"MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261124101500||ORU^R01^ORU_R01|{control}|P|2.5.1"
    pid = f"PID|1||{mrn}^^^GENHOSP^MR||Doe^Jane||19700101|F"
    obx = [f"OBX|{n + 1}|NM|2823-3^Potassium^LN||6.{n % 10}|mmol/L|3.5-5.1|{flag}|||F" for n in range(obx_count)]
    return ("\r".join([msh, pid, "ORC|RE|P1|F1", "OBR|1|P1|F1|80048^BMP^CPT|||20261124100000", *obx]) + "\r").encode()


def _exchange(conn: socket.socket, payload: bytes, decoder: MLLPDecoder) -> None:
    conn.sendall(frame(payload))
    while True:
        data = conn.recv(65536)
        if not data:
            raise ConnectionError("closed before the ACK")
        if any(isinstance(item, Frame) for item in decoder.feed(data)):
            return


def _send_large(port: int, count: int, obx_count: int) -> None:
    """The sender process: `count` large messages, one after another, each waiting for its ACK."""
    with socket.create_connection(("127.0.0.1", port), timeout=600) as conn:
        for n in range(count):
            _exchange(conn, _oru(f"BIG{n}", obx_count), MLLPDecoder(1 << 30))


def _critical(port: int, stop: threading.Event, samples: list[tuple[float, float]]) -> None:
    """Critical results at 50 a second: (time sent, ms to ACK) each."""
    with socket.create_connection(("127.0.0.1", port), timeout=600) as conn:
        decoder, n = MLLPDecoder(), 0
        while not stop.is_set():
            n += 1
            sent = time.perf_counter()
            _exchange(conn, _oru(f"CRIT{n}", 1, flag="HH", mrn="MRN77"), decoder)  # another patient
            samples.append((sent, (time.perf_counter() - sent) * 1000))
            time.sleep(max(0.0, 0.02 - (time.perf_counter() - sent)))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _settled_rss_mb(pid: int, limit_s: float = 60.0) -> float:
    """Resident memory once it stops falling (3 s unchanged): the large messages' patient passivated
    (idle 1 s here, its snapshot written), the heap trimmed (once a second here)."""
    readings = [_rss_mb(pid)]
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        readings.append(_rss_mb(pid))
        recent = readings[-7:]
        if len(recent) == 7 and max(recent) - min(recent) < 0.02 * max(recent) and len(readings) > 8:
            break
    return readings[-1]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] if ordered else float("nan")


def _run(scratch: Path, name: str, large_message_bytes: int, count: int, obx_count: int) -> dict[str, Any]:
    config = scratch / f"{name}.toml"
    config.write_text(
        f"[ingest]\nlarge_message_bytes = {large_message_bytes}\n"
        "[node]\nsummary_interval_s = 1.0\n[actors]\nidle_timeout_s = 1.0\n"
    )
    command = [VIGIL, "--config", str(config), "run", "--mllp", "127.0.0.1:0", "--data", str(scratch / name)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as node:
        assert node.stdout is not None
        port = int(node.stdout.readline().decode().rsplit(":", 1)[1])
        samples: list[tuple[float, float]] = []
        stop = threading.Event()
        critical = threading.Thread(target=_critical, args=(port, stop, samples))
        critical.start()
        time.sleep(1.0)
        rss_before = _rss_mb(node.pid)
        began = time.perf_counter()
        sender = [sys.executable, __file__, _SEND_LARGE, str(port), str(count), str(obx_count)]
        subprocess.run(sender, check=True, preexec_fn=lambda: os.nice(10))  # lower priority, as a remote sender
        ended = time.perf_counter()
        rss_after = _rss_mb(node.pid)
        stop.set()
        critical.join()
        rss_passivated = _settled_rss_mb(node.pid)
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=120)
        node.stdout.close()
    idle = [ms for at, ms in samples if at < began]
    during = [ms for at, ms in samples if began <= at <= ended]
    return {
        "contender": name,
        "idle_p50_ms": _pct(idle, 50),
        "idle_p99_ms": _pct(idle, 99),
        "during_p50_ms": _pct(during, 50),
        "during_p99_ms": _pct(during, 99),
        "during_max_ms": max(during, default=float("nan")),
        "critical_sent_during": len(during),
        "large_messages_s": round(ended - began, 2),
        "rss_before_mb": round(rss_before, 1),
        "rss_after_mb": round(rss_after, 1),
        "rss_passivated_mb": round(rss_passivated, 1),
    }


def main() -> None:
    args = arguments(__doc__ or "")
    count, obx_count = (2, 20_000) if args.quick else (4, 150_000)
    megabytes = len(_oru("BIG0", obx_count)) / 1e6
    scratch = Path(tempfile.mkdtemp(prefix="vigil-bench-large-"))
    try:
        rows = [
            _run(scratch, "parse worker", 256 * 1024, count, obx_count),
            _run(scratch, "event loop", 1 << 40, count, obx_count),
        ]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    table = Table(title=f"Critical ACK while {count} large ORUs ({megabytes:.1f} MB, {obx_count:,} OBX each) arrive")
    columns = (
        "large messages parsed in",
        "idle p50/p99 ms",
        "during p50/p99 ms",
        "during worst ms",
        "RSS MB before / after / settled",
    )
    for name in columns:
        table.add_column(name, justify="left" if name == columns[0] else "right")
    for r in rows:
        table.add_row(
            r["contender"],
            f"{r['idle_p50_ms']:.2f} / {r['idle_p99_ms']:.2f}",
            f"{r['during_p50_ms']:.2f} / {r['during_p99_ms']:.2f}",
            f"{r['during_max_ms']:.0f}",
            f"{r['rss_before_mb']:.0f} / {r['rss_after_mb']:.0f} / {r['rss_passivated_mb']:.0f}",
        )
    console = Console(width=120)
    console.print(table)
    worker, loop = rows
    extra = {
        "worst_wait_loop_over_worker": round(loop["during_max_ms"] / worker["during_max_ms"], 2),
        "rss_passivated_over_before": round(worker["rss_passivated_mb"] / worker["rss_before_mb"], 2),
    }
    for key, value in extra.items():
        console.print(f"{key}: {value}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"title": "large messages", "message_mb": round(megabytes, 2), "results": rows, **extra}
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(doc)) + b"\n")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == _SEND_LARGE:
        _send_large(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
