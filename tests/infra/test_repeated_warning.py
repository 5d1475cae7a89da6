"""A warning that may fire many times a second is said at once, then once an interval with its count."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import structlog
from structlog.testing import capture_logs

from engine.core.hl7 import parse
from engine.core.mllp import Frame, MLLPDecoder, frame
from engine.infra.repeated_warning import RepeatedWarning
from tests.harness.helpers import MSH_ADT, PID, hl7

ROOT = Path(__file__).resolve().parents[2]
VIGIL = str(ROOT / "bin" / "vigil")


def test_said_at_once_then_once_per_interval_with_the_count() -> None:
    """Injected clock: lines at 0 s (1 time), 10 s (the 100 held back and that one), 20.5 s."""
    now = [0.0]
    warning = RepeatedWarning(structlog.get_logger("t"), "broker.down", interval_s=10.0, clock=lambda: now[0])
    with capture_logs() as logs:
        for step in range(205):
            now[0] = step * 0.1
            warning.warn(error="NoServersError")
    assert [(line["event"], line["times"]) for line in logs] == [
        ("broker.down", 1),
        ("broker.down", 100),
        ("broker.down", 100),
    ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_cluster_node_without_nats_is_quiet_and_its_ae_says_why(tmp_path: Path) -> None:
    """NATS unreachable: a few lines, not five a second; a message gets AE naming the lost connection."""
    args = [VIGIL, "run", "--mllp", "127.0.0.1:0", "--nats", f"nats://127.0.0.1:{_free_port()}", "--node-id", "n1"]
    proc = subprocess.Popen([*args, "--data", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().decode().rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
            conn.sendall(frame(hl7(MSH_ADT, PID)))
            decoder, got = MLLPDecoder(), []
            while not got:
                got = [f for f in decoder.feed(conn.recv(65536)) if isinstance(f, Frame)]
        time.sleep(3)  # nats-py keeps retrying meanwhile, five times a second
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    ack = parse(got[0].payload)
    assert ack.get("MSA-1") == "AE"
    assert "not connected to the cluster's NATS" in (ack.get("MSA-3") or "")
    errors = [json.loads(line) for line in err.splitlines() if b"cluster.nats_error" in line]
    assert 1 <= len(errors) <= 2
