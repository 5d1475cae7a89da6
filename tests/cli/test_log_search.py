"""`vigil log --control-id/--sender/--type/--since/--lane/--outcome` against a real node, then a killed one.

The node keeps the search index up with its log; the CLI catches up what it
has not indexed yet (a message acknowledged a moment ago, a node killed
mid-way) and makes a lost index again from the log.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path

from engine.auth import Role
from engine.core.mllp import MLLPDecoder
from engine.search import INDEX_FILE
from tests.harness.helpers import PID, hl7
from tests.harness.node_process import ROOT, VIGIL, exchange, node
from tests.harness.sessions import sign_in


def _msg(app: str, mtype: str, control_id: str, obx: str = "") -> bytes:
    msh = f"MSH|^~\\&|{app}|GENHOSP|VIGIL|GENHOSP|20261205100000||{mtype}|{control_id}|P|2.5.1"
    return hl7(msh, PID, *([obx] if obx else []))


FEED = [
    _msg("LAB", "ORU^R01", "C1", "OBX|1|NM|2823-3^K^LN||6.9|mmol/L|3.5-5.1|HH|||F"),
    _msg("ADT", "ADT^A01", "A1"),
    _msg("ADT", "ADT^A08", "A2"),
    _msg("LAB", "ORU^R01", "C1", "OBX|1|NM|2823-3^K^LN||4.0|mmol/L|3.5-5.1|N|||F"),  # C1 again, other content
    hl7("MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|2026||ORU^R01|BAD1|P|2.5.1", "OBR|1|P|F|X"),  # no patient: refused
]


def _vigil(data: Path, *args: str) -> tuple[int, str]:
    proc = subprocess.run([VIGIL, *args, "--data", str(data)], capture_output=True, cwd=ROOT, timeout=60, check=False)
    return proc.returncode, (proc.stdout + proc.stderr).decode()


def _found(data: Path, *criteria: str) -> list[tuple[object, ...]]:
    code, out = _vigil(data, "log", *criteria, "--json")
    assert code == 0, out
    rows = [json.loads(line) for line in out.splitlines()]
    return [(r["lsn"] or f"q{r['qid']}", r["sender"], r["message_type"], r["control_id"], r["outcome"]) for r in rows]


def _send(port: int, messages: list[bytes]) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        return [exchange(conn, m, MLLPDecoder()).split(b"\r")[1][:6] for m in messages]


def test_search_on_a_running_node_then_on_one_killed_and_with_its_index_lost(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with node(data) as (proc, port):
        assert _send(port, FEED) == [b"MSA|AA", b"MSA|AA", b"MSA|AA", b"MSA|AA", b"MSA|AR"]
        sign_in(data, "op.kim", Role.OPERATOR)
        assert _found(data, "--control-id", "C1") == [
            (1, "LAB^GENHOSP", "ORU^R01", "C1", "accepted"),
            (4, "LAB^GENHOSP", "ORU^R01", "C1", "reused"),
        ]
        assert [row[0] for row in _found(data, "--type", "ADT^*")] == [2, 3]
        assert [row[0] for row in _found(data, "--sender", "ADT^GENHOSP", "--type", "ADT^A08")] == [3]
        assert [row[0] for row in _found(data, "--sender", "LAB", "--lane", "critical")] == [1]
        assert _found(data, "--outcome", "reused") == [(4, "LAB^GENHOSP", "ORU^R01", "C1", "reused")]
        assert _found(data, "--outcome", "rejected") == [("q1", "LAB^GENHOSP", "ORU^R01", "BAD1", "rejected")]
        assert _found(data, "--since", "2099-01-01") == []
        assert len(_found(data, "--until", "2099-01-01", "--type", "ORU^R01")) == 2
        code, out = _vigil(data, "status", "--json")
        assert code == 0, out
        status = json.loads(out)
        assert 0 <= status["search"]["indexed_to"] <= status["wal"]["last_lsn"]
        code, out = _vigil(data, "status")
        assert "message search: indexed to LSN" in out
        code, out = _vigil(data, "log", "--control-id", "C1")
        assert code == 0, out
        assert "reused" in out, out
        assert "2 message(s)" in out
        # Acknowledged, then the node is killed before its next look: the search still finds it.
        assert _send(port, [_msg("RX", "RDE^O11", "R1")]) == [b"MSA|AA"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert [row[2] for row in _found(data, "--sender", "RX")] == ["RDE^O11"]
    (data / INDEX_FILE).unlink()
    assert [row[0] for row in _found(data, "--control-id", "C1")] == [1, 4]


def test_bad_search_criteria_get_one_clear_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with node(data) as (_, port):
        assert _send(port, FEED[:1]) == [b"MSA|AA"]
        sign_in(data, "op.kim", Role.OPERATOR)
        code, out = _vigil(data, "log", "--since", "yesterday")
        assert code == 2
        assert "'yesterday' is not a time" in out
        code, out = _vigil(data, "log", "--outcome", "lost")
        assert code == 2
        assert "'lost' is not one of" in out
