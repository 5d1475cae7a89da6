"""How many messages per second does a node make durable, via stdin, MLLP and NATS, and how fast is an ACK?

The node is a real `vigil run` process; every message counted was ACK'd
(MLLP) or answered "accepted" (stdin) only once fsync'd. MLLP senders are
threads in this process, each on its own connection, sending one message
and waiting for its ACK before the next, as HL7 interfaces do. The ACK
round trip of one unsaturated connection is compared with this machine's
fdatasync p99, measured in the same run. stdin runs twice in the same
run, parsing in the event loop and in one worker process (`[ingest]
parse_workers`; an input of 2,048 messages or more), and reports the ratio.
The NATS row drains a JetStream stream filled beforehand (a real
nats-server, fsyncing every write), each message acked only once durable
in the node's log.

`--against CHECKOUT` compares this code with another checkout of Vigil
(an earlier commit: `git worktree add /tmp/old REV`, then its `bin/vigil`
bootstraps its own `.venv`): stdin and MLLP at 32 connections, the two
alternated round by round in this one run, medians, and new/old.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
from _harness import arguments, fail_if
from rich.console import Console
from rich.table import Table

from engine.core.feedgen import FeedMix, generate_feed
from engine.core.mllp import Frame, MLLPDecoder, frame
from tests.harness.nats_server import (  # the tests' starter (bin/bench puts the repository on the path)
    fill_stream,
    nats_server,
    until_consumed,
)

ROOT = Path(__file__).resolve().parents[1]
VIGIL = [str(ROOT / "bin" / "vigil")]


def _stdin(feed: list[bytes], scratch: Path, parse_workers: int, vigil: list[str] = VIGIL) -> tuple[float, float]:
    """(messages/s excluding start-up, start-up seconds), with `parse_workers` parse processes."""
    config = scratch / f"parse-{parse_workers}.toml"
    config.write_text(f"[ingest]\nparse_workers = {parse_workers}\n")
    shutil.rmtree(scratch / f"empty-{parse_workers}", ignore_errors=True)
    shutil.rmtree(scratch / f"stdin-{parse_workers}", ignore_errors=True)  # a fresh log each round
    command = [*vigil, "--config", str(config), "run", "--stdin", "--data"]
    t0 = time.perf_counter()
    subprocess.run([*command, str(scratch / f"empty-{parse_workers}")], input=b"", capture_output=True, check=True)
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*command, str(scratch / f"stdin-{parse_workers}")], input=b"".join(feed), capture_output=True, check=False
    )
    elapsed = time.perf_counter() - t0
    accepted = proc.stdout.count(b'"accepted"')
    fail_if(accepted != len(feed), f"stdin: {accepted} of {len(feed)} accepted")
    return len(feed) / max(1e-9, elapsed - startup), startup


def _sender(port: int, feed: list[bytes], deadline: float, rtts: list[float], counter: list[int]) -> None:
    decoder = MLLPDecoder()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        for raw in feed:
            if time.perf_counter() >= deadline:
                return
            t0 = time.perf_counter()
            conn.sendall(frame(raw))
            while True:
                items = decoder.feed(conn.recv(65536))
                if any(isinstance(i, Frame) for i in items):
                    break
            rtts.append(time.perf_counter() - t0)
            counter[0] += 1


def _mllp(
    feeds: list[list[bytes]], scratch: Path, connections: int, duration_s: float, vigil: list[str] = VIGIL
) -> tuple[float, float, float]:
    """(messages/s, ACK p50 ms, ACK p99 ms) with `connections` senders."""
    data = scratch / f"mllp-{connections}"
    shutil.rmtree(data, ignore_errors=True)  # a fresh log each run: the ids repeat
    with subprocess.Popen(
        [*vigil, "run", "--mllp", "127.0.0.1:0", "--data", str(data)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as proc:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().decode().rsplit(":", 1)[1])
        rtts: list[float] = []
        counters = [[0] for _ in range(connections)]
        start = time.perf_counter()
        deadline = start + duration_s
        threads = [
            threading.Thread(target=_sender, args=(port, feeds[k % len(feeds)], deadline, rtts, counters[k]))
            for k in range(connections)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        proc.stdout.close()
    done = sum(c[0] for c in counters)
    ms = sorted(r * 1000 for r in rtts)
    return done / elapsed, _pct(ms, 50), _pct(ms, 99)


def _nats(feed: list[bytes], scratch: Path) -> float:
    """Messages/s a node drains from a JetStream stream (each acked only once durable), from ready to empty."""
    with nats_server(scratch / "nats") as url:
        config = scratch / "nats.toml"
        config.write_text(f'[nats]\nservers = ["{url}"]\n[[nats.subjects]]\nsubject = "hl7.in"\nstream = "HL7_IN"\n')
        anyio.run(fill_stream, url, feed, backend="asyncio")
        with subprocess.Popen(
            [*VIGIL, "--config", str(config), "run", "--data", str(scratch / "nats-data")],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        ) as proc:
            assert proc.stdout is not None
            proc.stdout.readline()  # ready: consuming
            start = time.perf_counter()
            anyio.run(
                functools.partial(until_consumed, url, "HL7_IN", "vigil", len(feed), limit_s=600), backend="asyncio"
            )
            elapsed = time.perf_counter() - start
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            proc.stdout.close()
    return len(feed) / elapsed


def _row(source: str, connections: int, rate: float, p50: float, p99: float) -> dict[str, Any]:
    return {"source": source, "connections": connections, "messages_per_s": rate, "p50_ms": p50, "p99_ms": p99}


def _pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _fsync_p99_ms(directory: Path) -> float:
    fd = os.open(directory / "probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    latencies = []
    try:
        for _ in range(300):
            t0 = time.perf_counter()
            os.write(fd, b"x" * 512)
            os.fdatasync(fd)
            latencies.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
    return _pct(latencies, 99)


def _against(checkout: Path, scratch: Path, quick: bool) -> dict[str, Any]:
    """This code and another checkout's, alternated round by round: medians and new/old."""
    # Its own code only: run from its directory, without this run's PYTHONPATH (which names this checkout).
    root = checkout.resolve()
    other = ["env", "-u", "PYTHONPATH", f"--chdir={root}", str(root / "bin" / "vigil")]
    rounds = 1 if quick else 3
    feed = generate_feed(4_000 if quick else 40_000, seed=21)
    feeds = [generate_feed(20_000, seed=100 + k, id_prefix=f"C{k}") for k in range(8)]
    duration = 0.6 if quick else 5.0
    rates: dict[str, dict[str, list[float]]] = {"stdin": {"new": [], "old": []}, "mllp32": {"new": [], "old": []}}
    for _ in range(rounds):
        for name, vigil in (("new", VIGIL), ("old", other)):
            (scratch / name).mkdir(parents=True, exist_ok=True)
            rates["stdin"][name].append(_stdin(feed, scratch / name, 1, vigil)[0])
            rates["mllp32"][name].append(_mllp(feeds, scratch / name, 32, duration, vigil)[0])
    result: dict[str, Any] = {"against": str(checkout), "rounds": rounds}
    for row, by in rates.items():
        new, old = statistics.median(by["new"]), statistics.median(by["old"])
        result[row] = {"new_per_s": round(new), "old_per_s": round(old), "new_over_old": round(new / old, 3)}
    return result


def main() -> None:
    args = arguments(
        __doc__ or "",
        lambda parser: parser.add_argument("--against", type=Path, help="another checkout of Vigil to compare with"),
    )
    quick = args.quick
    count = 4_000 if quick else 40_000  # quick: still past parse_pool_messages_min (2,048)
    duration = 0.6 if quick else 5.0
    scratch = Path(tempfile.mkdtemp(prefix="vigil-bench-node-"))
    rows: list[dict[str, Any]] = []
    try:
        stdin_feed = generate_feed(count, seed=21)
        in_loop, _ = _stdin(stdin_feed, scratch, parse_workers=0)
        stdin_rate, startup = _stdin(stdin_feed, scratch, parse_workers=1)
        for source, rate in (("stdin, parsed in the loop", in_loop), ("stdin, 1 parse worker", stdin_rate)):
            rows.append({"source": source, "connections": "-", "messages_per_s": rate, "p50_ms": None, "p99_ms": None})
        # Latency unsaturated: one connection of clinical (standard-lane) traffic; batch-only
        # groups may wait `wal.commit_delay_ms` for company by design, so they are not the measure.
        clinical = [generate_feed(20_000, seed=300, mix=FeedMix(1, 3, 0, 0, 1, 1, 0))]
        rate, p50, p99 = _mllp(clinical, scratch, 1, duration)
        rows.append(
            {"source": "mllp, clinical", "connections": 1, "messages_per_s": rate, "p50_ms": p50, "p99_ms": p99}
        )
        # Throughput: the realistic mix (mostly billing), each connection its own message ids.
        feeds = [generate_feed(20_000, seed=100 + k, id_prefix=f"C{k}") for k in range(8)]
        for connections in (1, 8, 32):
            rate, p50, p99 = _mllp(feeds, scratch, connections, duration)
            row = {
                "source": "mllp, mix",
                "connections": connections,
                "messages_per_s": rate,
                "p50_ms": p50,
                "p99_ms": p99,
            }
            rows.append(row)
        nats_feed = generate_feed(count // 2, seed=41)
        rows.append(_row("nats jetstream, mix", 1, _nats(nats_feed, scratch), float("nan"), float("nan")))
        rows[-1].update(p50_ms=None, p99_ms=None, connections="-")
        fsync_p99 = _fsync_p99_ms(scratch)
        against = _against(args.against, scratch / "against", quick) if args.against else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    table = Table(title="Durable messages per second through a vigil run process")
    for name in ("source", "connections", "messages/s", "ACK p50 ms", "ACK p99 ms"):
        table.add_column(name, justify="left" if name == "source" else "right")
    for r in rows:
        p50 = "-" if r["p50_ms"] is None else f"{r['p50_ms']:.2f}"
        p99 = "-" if r["p99_ms"] is None else f"{r['p99_ms']:.2f}"
        table.add_row(r["source"], str(r["connections"]), f"{r['messages_per_s']:,.0f}", p50, p99)
    console = Console(width=120)
    console.print(table)
    single = rows[2]  # one connection of clinical traffic: the unsaturated ACK
    extra: dict[str, Any] = {
        "node_startup_s": round(startup, 2),
        "stdin_parse_worker_vs_loop": round(stdin_rate / in_loop, 2),
        "machine_fdatasync_p99_ms": round(fsync_p99, 3),
        "mllp_single_p99_minus_fsync_p99_ms": round(single["p99_ms"] - fsync_p99, 3),
        "goals": ">= 25,000/s via stdin, >= 10,000/s via MLLP; MLLP p99 <= fsync p99 + 2 ms unsaturated",
    }
    if against is not None:
        extra["against"] = against
    for key, value in extra.items():
        console.print(f"{key}: [bold]{value}[/]")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(
            msgspec.json.format(msgspec.json.encode({"title": "node", "results": rows, **extra})) + b"\n"
        )
    fail_if(any(r["messages_per_s"] <= 0 for r in rows), "a source made nothing durable")


if __name__ == "__main__":
    main()
