"""One harness for tests that drive a real `vigil run` process: launch it, talk MLLP to it, read its log.

Test modules import these, never each other's helpers.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio

from engine.core.mllp import Frame, MLLPDecoder, frame
from engine.wal import LogRecord, open_wal
from tests.harness.helpers import hl7, oru

__all__ = ["NO_PID", "ROOT", "VIGIL", "exchange", "http_node", "log_ids", "log_records", "message", "node", "run_stdin"]

ROOT = Path(__file__).resolve().parents[2]
VIGIL = str(ROOT / "bin" / "vigil")

NO_PID = hl7("MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|2026||ORU^R01|BAD1|P|2.5.1", "OBR|1|P|F|X")


def message(n: int) -> bytes:
    """A routine potassium result whose MSH-10 is CTL{n:06d}."""
    msh = f"MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261124101500||ORU^R01^ORU_R01|CTL{n:06d}|P|2.5.1"
    return oru("OBX|1|NM|2823-3^K^LN||4.1|mmol/L|3.5-5.1|N|||F", msh=msh)


@contextmanager
def node(data: Path, *extra: str, config: Path | None = None) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A `vigil run --mllp` process on a free loopback port; stopped (SIGTERM) at the end."""
    args = [VIGIL, *(["--config", str(config)] if config else []), "run", "--mllp", "127.0.0.1:0", "--data", str(data)]
    proc = subprocess.Popen([*args, *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert "listening on" in line, f"the node did not start: {line!r}"
        yield proc, int(line.rsplit(":", 1)[1].split()[0])
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


@contextmanager
def http_node(data: Path, config: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """`vigil run --mllp` with `[http] listen` in `config`: the process, its MLLP port and its HTTP port."""
    with node(data, *extra, config=config) as (proc, mllp_port):
        assert proc.stdout is not None
        said = [proc.stdout.readline().decode()]
        while "HTTP on http" not in said[-1] and len(said) < 4:  # a cluster node says it joins first
            said.append(proc.stdout.readline().decode())
        assert "HTTP on http" in said[-1], f"the node did not say where it serves HTTP: {said!r}"
        yield proc, mllp_port, int(said[-1].rsplit(":", 1)[1])


def exchange(conn: socket.socket, payload: bytes, decoder: MLLPDecoder) -> bytes:
    """Send one framed message and return the payload of the answer."""
    conn.sendall(frame(payload))
    while True:
        data = conn.recv(65536)
        assert data, "connection closed before the ACK"
        for item in decoder.feed(data):
            if isinstance(item, Frame):
                return item.payload


def run_stdin(data: Path, feed: bytes, *options: str) -> tuple[list[dict[str, object]], str]:
    """`vigil [options] run --stdin`: each message's JSON answer, and the node's log lines; it must exit 0."""
    proc = subprocess.run(
        [VIGIL, *options, "run", "--stdin", "--data", str(data)],
        input=feed,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr.decode()


def log_ids(data: Path) -> list[str]:
    """The message id of every record in the data directory's log, in LSN order."""
    return [r.message_id for r in log_records(data)]


def log_records(data: Path) -> list[LogRecord]:
    """Every record in the data directory's log, in LSN order."""

    async def read() -> list[LogRecord]:
        async with open_wal(data / "wal") as wal:
            return list(wal.read_from(1))

    return anyio.run(read)
