"""Alerts from a real `vigil run`: a feed gone quiet and a growing quarantine, each POSTed to a real HTTP
endpoint when raised and when cleared, shown in `/metrics` and in `vigil status` while they hold."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from engine.auth import Role
from engine.core.hl7 import parse
from engine.core.mllp import MLLPDecoder
from tests.harness.node_process import NO_PID, ROOT, VIGIL, exchange, http_node, message
from tests.harness.sessions import sign_in
from tests.harness.webhook_receiver import Received, webhook_receiver

_CONFIG = """
[http]
listen = "127.0.0.1:0"
[search]
interval_s = 0.1
[alerts]
interval_s = 0.1
quarantine_open_max = 1
webhook_url = "{url}"
[[alerts.quiet]]
sender = "LAB^GENHOSP"
within_s = 1.0
"""


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def _notices(received: Received, state: str, rule: str) -> int:
    return sum(1 for b in received.bodies() if (b["state"], b["rule"]) == (state, rule))


def _answer(port: int, payload: bytes) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        return str(parse(exchange(conn, payload, MLLPDecoder())).get("MSA-1"))


def test_a_quiet_feed_and_a_growing_quarantine_are_raised_shown_and_cleared(tmp_path: Path) -> None:
    with webhook_receiver() as received:
        config = tmp_path / "vigil.toml"
        config.write_text(_CONFIG.format(url=received.url))
        data = tmp_path / "data"
        with http_node(data, config) as (_proc, mllp_port, http_port):
            metrics = f"http://127.0.0.1:{http_port}/metrics"
            assert _answer(mllp_port, message(1)) == "AA"
            _until(lambda: _notices(received, "raised", "feed_quiet") == 1, "the quiet lab feed raised")
            line = 'vigil_alert_active{rule="feed_quiet",subject="LAB^GENHOSP"} 1.0'
            assert line in httpx.get(metrics).text  # it holds until the lab speaks again
            assert _answer(mllp_port, message(2)) == "AA"
            _until(lambda: _notices(received, "cleared", "feed_quiet") == 1, "the lab feed cleared once it spoke")

            assert [_answer(mllp_port, NO_PID.replace(b"BAD1", f"BAD{n}".encode())) for n in (1, 2)] == ["AR", "AR"]
            _until(lambda: _notices(received, "raised", "quarantine_growing") == 1, "the quarantine alert raised")
            sign_in(data, "op.kim", Role.OPERATOR, config=config)
            status = subprocess.run(
                [VIGIL, "--config", str(config), "status", "--data", str(data)],
                capture_output=True,
                cwd=ROOT,
                timeout=60,
                check=True,
            ).stdout.decode()
            assert "quarantine_growing" in status
            assert "Alerts (" in status
            assert "2 open items" in status
            assert 'vigil_alert_active{rule="quarantine_growing",subject="quarantine"} 1.0' in httpx.get(metrics).text
        raised = next(b for b in received.bodies() if b["rule"] == "quarantine_growing")
        assert (raised["node"], raised["subject"], raised["detail"]) == (
            "vigil-1",
            "quarantine",
            "2 open items (limit 1)",
        )
