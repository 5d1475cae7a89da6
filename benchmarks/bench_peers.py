"""Vigil against peers, each acknowledging only after an fsync of the message, in the same run.

Contenders, each a server process on loopback: `vigil run --mllp`; python-hl7's
asyncio MLLP server (`hl7.mllp`) appending each message to a file and
fdatasync'ing it before its ACK; node-hl7-server (Node.js, installed from the
npm registry into `.bench/peers/`, a folder this benchmark owns; skipped with
the reason where Node.js or npm is absent, and at --quick) doing the same
with `FileHandle.datasync`. One load process opens K connections, each
sending a message and waiting for its ACK; an ACK counts only when MSA-1 is
AA/CA and MSA-2 echoes the message's MSH-10 (every message is sent with an
MSH-10 of its own, so no server sees a duplicate). node-hl7-server 2.5.0
keeps the text of earlier messages on a kept-open connection and answers
them again, so it gets one connection per message (said in the table).

Per contender, message set and K: messages/s, ACK p50/p99, CPU ms per
message (the server's process tree, from /proc), and the ACK p99 of the
messages Vigil's lanes call billing (batch: whether they are held back
behind urgent traffic; measured alike for every contender); rounds alternate
the contenders and the best round is kept; the ratios are Vigil's over each peer.
With --vigil-also, a second Vigil with that configuration is one more
contender, alternated with the others (its ratio: Vigil's over it).
Message sets: the public corpus (real messages; a generated feed where it is
absent) and a short ORU^R01 (4 segments).
"""

from __future__ import annotations

import argparse
import asyncio
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
from _harness import arguments, corpus_messages, fail_if, peer_text
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
VIGIL = str(ROOT / "bin" / "vigil")
_PEERS_DIR = ROOT / ".bench" / "peers"
_NODE_PACKAGE = "node-hl7-server@2.5.0"
_ALSO = "vigil (--vigil-also)"
_SHORT = (
    "MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261124101500||ORU^R01^ORU_R01|X|P|2.5.1\r"
    "PID|1||MRN{n}^^^GENHOSP^MR||Doe^Jane||19700101|F\r"
    "OBR|1|P100|F200|80048^BMP^CPT|||20261124100000\r"
    "OBX|1|NM|2823-3^K^LN||4.1|mmol/L|3.5-5.1|N|||F\r"
)
_NODE_SERVER = """
const { Server } = require('node-hl7-server');
const fs = require('fs');
(async () => {
  const file = await fs.promises.open(process.argv[3], 'a');
  const server = new Server();
  server.createInbound({ port: Number(process.argv[2]) }, async (req, res) => {
    await file.write(req.getMessage().toString() + '\\n');
    await file.datasync();
    await res.sendResponse('AA');
  });
  console.log('listening');
})();
"""


# -- the python-hl7 peer (this script, run with --python-peer) --------------------------------


def _python_peer(path: str) -> None:
    import hl7.mllp

    async def handle(reader: Any, writer: Any) -> None:
        with open(path, "ab") as f:  # noqa: ASYNC230 -- the peer as such servers are written: blocking, per message
            try:
                while True:
                    message = await reader.readmessage()
                    f.write(str(message).encode() + b"\n")
                    f.flush()
                    os.fdatasync(f.fileno())
                    writer.writemessage(message.create_ack())
                    await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError, hl7.mllp.InvalidBlockError):
                pass
            finally:
                writer.close()

    async def main() -> None:
        server = await hl7.mllp.start_hl7_server(handle, host="127.0.0.1", port=0)
        print(server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# -- the load (this script, run with --load) ---------------------------------------------------


def _load(port: int, connections: int, seconds: float, *, per_message: bool, prefix: str, texts: list[str]) -> None:
    """K connections for `seconds`; prints one JSON line: acknowledged count, latencies, refusals."""
    from engine.core.hl7 import parse
    from engine.core.mllp import Frame, MLLPDecoder, frame
    from engine.core.model import Lane
    from lanes import Classifier

    latencies: list[float] = []
    batch: list[float] = []  # billing's, as Vigil's lanes classify it: held back behind urgent traffic or not
    billing = [Classifier().classify_hl7(t.encode()).lane is Lane.BATCH for t in texts]
    wrong = [0]
    deadline = time.perf_counter() + seconds

    def one(k: int) -> None:
        conn: socket.socket | None = None
        decoder = MLLPDecoder()
        n = 0
        try:
            while time.perf_counter() < deadline:
                control = f"{prefix}{k}-{n}"
                pick = (k * 7919 + n) % len(texts)
                raw = _with_control_id(texts[pick], control).encode()
                if conn is None:
                    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
                started = time.perf_counter()
                conn.sendall(frame(raw))
                answer = None
                while answer is None:
                    data = conn.recv(65536)
                    if not data:
                        raise ConnectionError("closed")
                    answer = next((i.payload for i in decoder.feed(data) if isinstance(i, Frame)), None)
                ack = parse(answer)
                if ack.get("MSA-1") in ("AA", "CA") and ack.get("MSA-2") == control:
                    latencies.append((time.perf_counter() - started) * 1000)
                    if billing[pick]:
                        batch.append(latencies[-1])
                else:
                    wrong[0] += 1
                if per_message:
                    conn.close()
                    conn, decoder = None, MLLPDecoder()
                n += 1
        except OSError:
            wrong[0] += 1
        finally:
            if conn is not None:
                conn.close()

    threads = [threading.Thread(target=one, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(msgspec.json.encode({"latencies": latencies, "batch": batch, "wrong": wrong[0]}).decode(), flush=True)


def _with_control_id(text: str, control: str) -> str:
    msh, sep, rest = text.partition("\r")
    fields = msh.split("|")
    fields[9] = control
    return "|".join(fields) + sep + rest


# -- contenders ------------------------------------------------------------------------------


class _Server:
    """A contender's server process, its port, and how its load must connect."""

    def __init__(self, name: str, command: list[str], scratch: Path, *, port: int | None = None) -> None:
        self.name = name
        self.per_message = name == "node-hl7-server"
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=scratch)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line:
            raise RuntimeError(f"{name} did not start")
        self.port = port if port is not None else int(line.rsplit(":", 1)[-1].split()[-1])

    def cpu_s(self) -> float:
        """User and system CPU of the process and its descendants (a node's parse workers)."""
        total, tick = 0.0, os.sysconf("SC_CLK_TCK")
        for pid in _tree(self.proc.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _node_ready() -> str | None:
    """Install node-hl7-server into the benchmark's folder once; None when ready, else why not."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "Node.js or npm is not installed"
    if not (_PEERS_DIR / "node_modules" / "node-hl7-server").is_dir():
        _PEERS_DIR.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(_PEERS_DIR), _NODE_PACKAGE],
            capture_output=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            return f"npm install {_NODE_PACKAGE} failed: {done.stderr.decode(errors='replace')[-200:]}"
    (_PEERS_DIR / "server.js").write_text(_NODE_SERVER)
    return None


def _start(name: str, scratch: Path, also: str) -> _Server:
    run = scratch / f"{name}-{time.monotonic_ns()}"
    run.mkdir()
    if name.startswith("vigil"):
        config = run / "vigil.toml"
        config.write_text(also if name == _ALSO else "")
        command = [VIGIL, "--config", str(config), "run", "--mllp", "127.0.0.1:0", "--data", str(run / "data")]
        return _Server(name, command, run)
    if name == "python-hl7":
        return _Server(name, [sys.executable, __file__, "--python-peer", str(run / "received.hl7")], run)
    port = _free_port()
    command = ["node", str(_PEERS_DIR / "server.js"), str(port), str(run / "received.hl7")]
    return _Server(name, command, run, port=port)


def _round(
    name: str, scratch: Path, texts: list[str], connections: int, seconds: float, *, also: str
) -> dict[str, Any]:
    server = _start(name, scratch, also)
    try:
        prefix = f"R{time.monotonic_ns() % 10**8}-"
        cpu_before = server.cpu_s()
        command = [sys.executable, __file__, "--load", str(server.port), str(connections), str(seconds)]
        command += ["--per-message" if server.per_message else "--kept-open", prefix]
        done = subprocess.run(
            command, input="\n".join(t.replace("\r", "\x1f") for t in texts).encode(), capture_output=True, check=True
        )
        cpu = server.cpu_s() - cpu_before
    finally:
        server.stop()
    result = msgspec.json.decode(done.stdout.splitlines()[-1])
    latencies = sorted(result["latencies"])
    count = len(latencies)
    return {
        "per_s": count / seconds,
        "p50_ms": _pct(latencies, 50),
        "p99_ms": _pct(latencies, 99),
        "billing_p99_ms": _pct(sorted(result["batch"]), 99),
        "cpu_ms_per_message": cpu * 1000 / count if count else float("nan"),
        "acknowledged": count,
        "wrong": result["wrong"],
    }


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--python-peer":
        _python_peer(sys.argv[2])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        port, connections, seconds, mode, prefix = sys.argv[2:7]
        texts = [t.replace("\x1f", "\r") for t in sys.stdin.read().split("\n") if t]
        _load(
            int(port), int(connections), float(seconds), per_message=mode == "--per-message", prefix=prefix, texts=texts
        )
        return
    args = arguments(__doc__ or "", _options)
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    rounds = args.rounds or (1 if args.quick else 3)
    ks = [int(k) for k in (args.connections or ("8" if args.quick else "1,8,32")).split(",")]
    corpus, where = corpus_messages()
    sets = {"corpus": [peer_text(raw) for raw in corpus], "short ORU": [_SHORT.format(n=n) for n in range(200)]}
    contenders = ["vigil", "python-hl7"]
    why_not = "not at --quick (full runs only)" if args.quick else _node_ready()
    if why_not is None:
        contenders.append("node-hl7-server")
    also = args.vigil_also.replace("\\n", "\n") if args.vigil_also else ""
    if also:
        contenders.append(_ALSO)
    scratch = Path(tempfile.mkdtemp(prefix="vigil-bench-peers-"))
    best: dict[tuple[str, str, int], dict[str, Any]] = {}
    try:
        for _ in range(rounds):
            for set_name, texts in sets.items():
                for k in ks:
                    for name in contenders:
                        r = _round(name, scratch, texts, k, seconds, also=also)
                        key = (set_name, name, k)
                        if key not in best or r["per_s"] > best[key]["per_s"]:
                            best[key] = r
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = [{"messages": s, "server": n, "connections": k, **r} for (s, n, k), r in best.items()]
    ratios = {
        f"{s} K={k} vigil/{peer}": round(best[(s, "vigil", k)]["per_s"] / best[(s, peer, k)]["per_s"], 2)
        for s in sets
        for k in ks
        for peer in contenders[1:]
        if best[(s, peer, k)]["per_s"] > 0
    }
    _print(rows, ratios, where, why_not)
    if also:
        print(f"{_ALSO}: vigil with {also!r}")
    if args.json:
        document = {
            "vigil_also": also,
            "data": where,
            "node_hl7_server": why_not or "measured",
            "rows": rows,
            "ratios": ratios,
        }
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(document)))
    fail_if(any(r["acknowledged"] == 0 for r in rows if r["server"].startswith("vigil")), "Vigil acknowledged nothing")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, help="each round's window")
    parser.add_argument("--connections", help="K values, comma-separated (default 1,8,32; 8 at --quick)")
    parser.add_argument(
        "--vigil-also", help="TOML for a second Vigil contender, alternated with the first (experiments; \\n for lines)"
    )


def _print(rows: list[dict[str, Any]], ratios: dict[str, float], where: str, why_not: str | None) -> None:
    table = Table(title=f"Vigil and peers, each ACK after an fsync ({where})")
    for name in ("messages", "server", "K", "msgs/s", "ACK p50 ms", "p99 ms", "billing p99", "CPU ms/msg", "refused"):
        table.add_column(name, justify="left" if name in ("messages", "server") else "right")
    for r in sorted(rows, key=lambda r: (r["messages"], r["connections"], r["server"])):
        server = r["server"] + (" (a connection per message)" if r["server"] == "node-hl7-server" else "")
        table.add_row(
            r["messages"],
            server,
            str(r["connections"]),
            f"{r['per_s']:,.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['billing_p99_ms']:.2f}" if r["billing_p99_ms"] == r["billing_p99_ms"] else "-",  # NaN: none sent
            f"{r['cpu_ms_per_message']:.2f}",
            str(r["wrong"]),
        )
    console = Console(width=150)
    console.print(table)
    console.print(f"msgs/s ratios: {ratios}")
    if why_not is not None:
        console.print(f"node-hl7-server not measured: {why_not}")


if __name__ == "__main__":
    main()
