"""The HTTP face of a real `vigil run` process: FHIR reads, and HL7 v2 over HTTP beside MLLP in the same run.

One node serves MLLP and HTTP. A patient with 1,000 results and one with
10,000 are sent in first (over MLLP, 10 results a message). Then, from this
process over loopback:
- FHIR reads, one client: `Observation?patient=` of the 1,000-result
  patient, the same `_as-of` a moment halfway through its history,
  `Patient/{id}`, and `$everything` of the 10,000-result patient: p50, p99;
- FHIR reads, 8 clients at once: requests per second;
- ingestion: K connections each sending one message and waiting for its
  answer (an ACK over MLLP; the ACK in the body of `POST /hl7v2`), HTTP and
  MLLP alternated round by round, each credited with its best round: msgs/s
  and the ratio. Both clients are raw sockets with keep-alive, so the
  figures are the node's, not a client library's.

Issue 18's goals: a 1,000-event record p99 <= 20 ms, `$everything` of 10,000
events <= 100 ms, as-of within 1.5 x the current read, HL7 v2 over HTTP >=
0.8 x MLLP. (Critical ACKs while 50 console sessions poll: `bench_isolation
--floods console`.)
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
from _harness import arguments, fail_if
from rich.console import Console
from rich.table import Table

from engine.auth import ApiClient, AuthStore, token_digest
from engine.core.feedgen import generate_feed
from engine.core.mllp import Frame, MLLPDecoder, frame
from engine.web import patient_id

ROOT = Path(__file__).resolve().parents[1]
VIGIL = str(ROOT / "bin" / "vigil")
TOKEN = "vgc_bench-token-not-a-secret"
_MSH = "MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261124101500||ORU^R01^ORU_R01|{cid}|P|2.5.1"


def _history(mrn: str, results: int, *, start_day: int = 1) -> list[bytes]:
    """ORU^R01s of one patient, 10 results each, a result every minute from 2026-11-{start_day}."""
    out = []
    for m in range(results // 10):
        minute = m * 10
        stamp = f"202611{start_day + minute // 1440:02d}{(minute // 60) % 24:02d}{minute % 60:02d}00"
        obx = [
            f"OBX|{k + 1}|NM|{2823 + k}-3^Test{k}^LN||{4 + k / 10:.1f}|mmol/L|3.5-5.1|N|||F|||{stamp}"
            for k in range(10)
        ]
        segments = [
            _MSH.format(cid=f"{mrn}-{m}"),
            f"PID|1||{mrn}^^^GENHOSP^MR||Doe^Jane||19700101|F",
            f"OBR|1|P{m}|F{m}|80048^BMP^CPT|||{stamp}",
            *obx,
        ]
        out.append(("\r".join(segments) + "\r").encode())
    return out


# -- raw clients: one connection each, kept alive ---------------------------------------


def _mllp_exchange(conn: socket.socket, decoder: MLLPDecoder, raw: bytes) -> bytes:
    conn.sendall(frame(raw))
    while True:
        for item in decoder.feed(conn.recv(65536)):
            if isinstance(item, Frame):
                return item.payload


class _Http:
    """HTTP/1.1 over one kept-alive socket: a request, then its status and body (Content-Length only)."""

    def __init__(self, port: int) -> None:
        self.conn = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buffer = b""

    def request(self, method: str, path: str, body: bytes = b"", content_type: str = "") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\n"
        if body:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        self.conn.sendall(head.encode() + b"\r\n" + body)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        header, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        length = next(int(v) for k, _, v in (h.partition(b":") for h in lines[1:]) if k.lower() == b"content-length")
        while len(self.buffer) < length:
            self.buffer += self._recv()
        answer, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), answer

    def _recv(self) -> bytes:
        data = self.conn.recv(1 << 20)
        if not data:
            raise ConnectionError("the node closed the connection")
        return data

    def close(self) -> None:
        self.conn.close()


# -- the node ---------------------------------------------------------------------------


@contextlib.contextmanager
def _node(scratch: Path) -> Iterator[tuple[int, int]]:
    data = scratch / "data"
    store = AuthStore.open_private(data)  # a registered client, as `vigil client add` makes one
    try:
        store.add_client(ApiClient("bench", ("system/*.*",), token_digest(TOKEN), time.time(), "bench"))
    finally:
        store.close()
    config = scratch / "vigil.toml"
    config.write_text('[http]\nlisten = "127.0.0.1:0"\n[actors]\nidle_timeout_s = 3600.0\n')
    log = (scratch / "node.log").open("wb")
    command = [VIGIL, "--config", str(config), "run", "--mllp", "127.0.0.1:0", "--data", str(data)]
    with log, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log) as node:
        assert node.stdout is not None
        mllp = int(node.stdout.readline().decode().rsplit(":", 1)[1])
        http = int(node.stdout.readline().decode().rsplit(":", 1)[1])
        try:
            yield mllp, http
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(timeout=120)
            node.stdout.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _timed(http: _Http, path: str, times: int) -> dict[str, Any]:
    status, body = http.request("GET", path)  # warm: the actor active, the first fold done
    assert status == 200, body[:300]
    latencies = []
    for _ in range(times):
        t0 = time.perf_counter()
        status, body = http.request("GET", path)
        latencies.append((time.perf_counter() - t0) * 1000)
        assert status == 200
    entries = msgspec.json.decode(body).get("total")
    return {"p50_ms": round(_pct(latencies, 50), 2), "p99_ms": round(_pct(latencies, 99), 2), "total": entries}


def _concurrent_reads(port: int, path: str, clients: int, seconds: float) -> float:
    counts = [0] * clients
    deadline = time.perf_counter() + seconds

    def read(k: int) -> None:
        http = _Http(port)
        try:
            while time.perf_counter() < deadline:
                status, _ = http.request("GET", path)
                assert status == 200
                counts[k] += 1
        finally:
            http.close()

    threads = [threading.Thread(target=read, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def _ingest_round(kind: str, mllp: int, http: int, feeds: list[list[bytes]]) -> float:
    """K connections, each sending its feed one message at a time; messages answered AA per second."""
    accepted = [0] * len(feeds)

    def send(k: int) -> None:
        if kind == "mllp":
            decoder = MLLPDecoder()
            with socket.create_connection(("127.0.0.1", mllp), timeout=60) as conn:
                for raw in feeds[k]:
                    accepted[k] += b"MSA|AA" in _mllp_exchange(conn, decoder, raw)
            return
        client = _Http(http)
        try:
            for raw in feeds[k]:
                status, ack = client.request("POST", "/hl7v2", raw, "x-application/hl7-v2+er7")
                accepted[k] += status == 200 and b"MSA|AA" in ack
        finally:
            client.close()

    threads = [threading.Thread(target=send, args=(k,)) for k in range(len(feeds))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    assert sum(accepted) == sum(len(f) for f in feeds), f"{kind}: {sum(accepted)} of {sum(len(f) for f in feeds)} AA"
    return sum(accepted) / elapsed


def main() -> None:
    args = arguments(__doc__ or "", _options)
    quick = args.quick
    small, large = (200, 1_000) if quick else (1_000, 10_000)
    reads = 20 if quick else 200
    rounds = args.rounds or (1 if quick else 3)
    per_connection = 50 if quick else 400
    with tempfile.TemporaryDirectory(prefix="vigil-bench-http-") as scratch, _node(Path(scratch)) as (mllp, http):
        decoder = MLLPDecoder()
        with socket.create_connection(("127.0.0.1", mllp), timeout=60) as conn:
            for raw in _history("MRN1000", small) + _history("MRN10000", large, start_day=2):
                assert b"MSA|AA" in _mllp_exchange(conn, decoder, raw)
        one, big = patient_id("GENHOSP|MRN1000"), patient_id("GENHOSP|MRN10000")
        client = _Http(http)
        halfway = f"2026-11-01T{(small // 2) // 60:02d}:{(small // 2) % 60:02d}:00Z"
        reads_table = {
            f"Observation?patient= ({small:,} results)": _timed(
                client, f"/fhir/Observation?patient={one}&_count=1000", reads
            ),
            "the same, _as-of halfway": _timed(
                client, f"/fhir/Observation?patient={one}&_count=1000&_as-of={halfway}", reads
            ),
            "Patient/{id}": _timed(client, f"/fhir/Patient/{one}", reads),
            f"$everything ({large:,} results)": _timed(
                client, f"/fhir/Patient/{big}/$everything?_count=1000", max(5, reads // 4)
            ),
        }
        client.close()
        per_s = _concurrent_reads(http, f"/fhir/Patient/{one}", 8, 2.0 if quick else 5.0)
        ingest: dict[str, float] = {"mllp": 0.0, "http": 0.0}
        for k in (1, 8):
            for r in range(rounds):
                for kind in ("mllp", "http"):  # alternated: the same machine's moments for both
                    feeds = [
                        generate_feed(per_connection, seed=1000 * k + 10 * r + c, id_prefix=f"{kind}{k}-{r}-{c}-")
                        for c in range(k)
                    ]
                    ingest[f"{kind} K={k}"] = max(
                        ingest.get(f"{kind} K={k}", 0.0), _ingest_round(kind, mllp, http, feeds)
                    )
    as_of = reads_table["the same, _as-of halfway"]["p99_ms"]
    current = reads_table[f"Observation?patient= ({small:,} results)"]["p99_ms"]
    result = {
        "reads": reads_table,
        "patient_reads_per_s_8_clients": round(per_s),
        "ingest_msgs_per_s": {k: round(v) for k, v in ingest.items() if v},
        "http_over_mllp": {f"K={k}": round(ingest[f"http K={k}"] / ingest[f"mllp K={k}"], 2) for k in (1, 8)},
        "as_of_over_current_p99": round(as_of / current, 2),
    }
    _print(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode({"title": "http", **result})))
    fail_if(
        any(r["total"] is None and "Patient/" not in name for name, r in reads_table.items()), "a search had no total"
    )


def _options(parser: argparse.ArgumentParser) -> None:
    del parser  # the shared options are enough


def _print(result: dict[str, Any]) -> None:
    console = Console(width=120)
    table = Table(title="FHIR reads over HTTP, one client (ms)")
    for name in ("read", "p50", "p99", "total"):
        table.add_column(name, justify="left" if name == "read" else "right")
    for name, r in result["reads"].items():
        table.add_row(name, f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", "" if r["total"] is None else f"{r['total']:,}")
    console.print(table)
    console.print(f"Patient/{{id}} with 8 clients: {result['patient_reads_per_s_8_clients']:,} reads/s")
    ingest = Table(title="Ingestion: each message answered once durable (msgs/s, best round)")
    for name in ("contender", "msgs/s"):
        ingest.add_column(name)
    for name, rate in result["ingest_msgs_per_s"].items():
        ingest.add_row(name, f"{rate:,}")
    console.print(ingest)
    console.print(f"HL7 v2 over HTTP / MLLP: {result['http_over_mllp']}")
    console.print(f"as-of / current read p99: {result['as_of_over_current_p99']}")


if __name__ == "__main__":
    main()
