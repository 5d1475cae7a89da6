"""What every benchmark shares: arguments, timing, the sample data, the table and the JSON.

Contenders run in the same process, interleaved round by round, and each is
credited with its best round: on a shared, noisy machine the best round is
the one least disturbed, and ratios come from the same run.
"""

from __future__ import annotations

import argparse
import platform
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "hl7v2"


class Contender(msgspec.Struct):
    """One thing measured: a name, what it does, and a function over one message."""

    name: str
    does: str
    run: Callable[[Any], object]
    inputs: Sequence[Any]
    max_messages: int | None = None  # for slow peers: a prefix of the inputs per round
    best_per_s: float = 0.0
    failures: int = 0


def arguments(description: str, more: Callable[[argparse.ArgumentParser], object] | None = None) -> argparse.Namespace:
    from engine.infra.logging_setup import configure_logging

    configure_logging("warning")  # the engine's info lines would clutter the tables
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI): checks the benchmark runs")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--rounds", type=int, help="rounds per contender (best is kept)")
    parser.add_argument("--plot", type=Path, help="write a PNG of the distributions here (where a benchmark has one)")
    if more is not None:
        more(parser)  # a benchmark's own options
    return parser.parse_args()


def corpus_messages() -> tuple[list[bytes], str]:
    """The public sample corpus, or (where absent) a generated feed, and which it was."""
    if CORPUS.is_dir():
        files = sorted(p for p in CORPUS.iterdir() if p.is_file())
        return [p.read_bytes() for p in files], f"../shared/corpus/hl7v2 ({len(files)} messages)"
    from engine.core.feedgen import generate_feed

    return generate_feed(500, seed=1), "generated feed (corpus absent: ../shared/corpus/hl7v2)"


def peer_text(raw: bytes) -> str:
    """What the peers accept: text with CR segment ends (prepared outside their timing)."""
    return raw.decode("utf-8-sig", errors="replace").replace("\r\n", "\r").replace("\n", "\r").strip("\r")


def measure(contenders: list[Contender], rounds: int, budget_s: float) -> None:
    """Run every contender `rounds` times, interleaved; keep each one's best rate."""
    for _ in range(rounds):
        for c in contenders:
            inputs = c.inputs[: c.max_messages] if c.max_messages else c.inputs
            done, failures = 0, 0
            started = time.perf_counter()
            while True:
                for item in inputs:
                    try:
                        c.run(item)
                    except Exception:  # noqa: BLE001 -- a peer's failure is counted, not fatal
                        failures += 1
                done += len(inputs)
                elapsed = time.perf_counter() - started
                if elapsed >= budget_s:
                    break
            c.best_per_s = max(c.best_per_s, done / elapsed)
            c.failures = max(c.failures, failures)


def report(title: str, data: str, contenders: list[Contender], extra: dict[str, Any], json_path: Path | None) -> None:
    """Print the table and write the JSON."""
    console = Console(width=max(100, Console().width))
    python = f"{platform.python_implementation()} {platform.python_version()}"
    table = Table(title=f"{title}\n[dim]{data}; best of the rounds; {python}[/]")
    table.add_column("contender")
    table.add_column("what it does")
    table.add_column("messages/s", justify="right")
    table.add_column("failures", justify="right")
    for c in contenders:
        table.add_row(c.name, c.does, f"{c.best_per_s:,.0f}", str(c.failures))
    console.print(table)
    for key, value in extra.items():
        console.print(f"{key}: [bold]{value}[/]")
    if json_path is not None:
        doc = {
            "title": title,
            "data": data,
            "python": platform.python_version(),
            "results": [
                {"name": c.name, "does": c.does, "messages_per_s": round(c.best_per_s, 1), "failures": c.failures}
                for c in contenders
            ],
            **extra,
        }
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_bytes(msgspec.json.format(msgspec.json.encode(doc)) + b"\n")


def probe(port: int, feed: Sequence[bytes], seconds: float, rate: float, out: dict[str, Any]) -> None:
    """Send at a steady `rate` on one MLLP connection for `seconds`; into `out`: each send-to-ACK time (ms) and
    how many were answered AA/CA. Run it in a thread beside what it measures."""
    from engine.core.mllp import Frame, MLLPDecoder, frame

    decoder = MLLPDecoder()
    latencies: list[float] = []
    accepted = 0
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        for n, raw in enumerate(feed):
            due = start + n / rate
            if due - start >= seconds:
                break
            time.sleep(max(0.0, due - time.perf_counter()))
            t0 = time.perf_counter()
            conn.sendall(frame(raw))
            answer = b""
            while not answer:
                for item in decoder.feed(conn.recv(65536)):
                    if isinstance(item, Frame):
                        answer = item.payload
            latencies.append((time.perf_counter() - t0) * 1000)
            accepted += b"|AA|" in answer or b"|CA|" in answer
    out.update(latencies=latencies, accepted=accepted)


def fail_if(condition: bool, message: str) -> None:
    """A benchmark that cannot measure what it claims fails loudly."""
    if condition:
        print(f"benchmark broken: {message}", file=sys.stderr)
        sys.exit(1)
