"""`vigil quarantine resend|discard|resolve|retry` against a real running node, then against its stopped data.

With a node running, the CLI asks it (its intake takes the message, like any
source's); with none, the CLI does the same itself under the log's lock.
Either way the item names what became of it, the log names the item, and
the audit trail names who acted.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import anyio

from engine.auth import Role
from engine.core.mllp import MLLPDecoder
from engine.wal import open_wal
from tests.harness.helpers import MSH_ORU, hl7, oru
from tests.harness.node_process import ROOT, VIGIL, exchange, node
from tests.harness.sessions import sign_in

FIXED = oru("OBX|1|NM|2823-3^K^LN||4.1|mmol/L|3.5-5.1|N|||F", msh=MSH_ORU.replace("MSG0001", "BAD1"))


def _no_pid(control_id: str) -> bytes:
    return hl7(f"MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|2026||ORU^R01|{control_id}|P|2.5.1", "OBR|1|P|F|X")


def _vigil(data: Path, *args: str, stdin: bytes = b"") -> tuple[int, str]:
    proc = subprocess.run(
        [VIGIL, *args, "--data", str(data)], input=stdin, capture_output=True, cwd=ROOT, timeout=60, check=False
    )
    return proc.returncode, (proc.stdout + proc.stderr).decode()


def _items(data: Path) -> dict[int, dict[str, object]]:
    code, out = _vigil(data, "quarantine", "list", "--all", "--json")
    assert code == 0, out
    return {int(doc["qid"]): doc for doc in map(json.loads, out.splitlines())}


def _log(data: Path) -> list[tuple[str, str, bytes]]:
    async def read() -> list[tuple[str, str, bytes]]:
        async with open_wal(data / "wal") as wal:
            return [(r.envelope.message_type, r.envelope.source, r.envelope.raw) for r in wal.read_from(1)]

    return anyio.run(read)


def test_quarantine_actions_through_a_running_node_and_then_without_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with node(data) as (_, port):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            for n in range(1, 5):
                answer = exchange(conn, _no_pid(f"BAD{n}"), MLLPDecoder())
                assert b"MSA|AR|" in answer or b"MSA|AE|" in answer
        sign_in(data, "op.kim", Role.OPERATOR)
        code, out = _vigil(data, "status", "--json")
        assert code == 0, out
        status = json.loads(out)
        assert (status["quarantine_open"], status["quarantine_open_by_age"]) == (
            4,
            {"under_1h": 4, "1h_to_1d": 0, "over_1d": 0},
        )
        edited = tmp_path / "edited.hl7"
        edited.write_bytes(FIXED)
        code, out = _vigil(data, "quarantine", "resend", "1", "--file", str(edited), "--reason", "PID from ADT")
        assert code == 0, out
        assert "item 1: resent as edited: LSN" in out
        code, out = _vigil(data, "quarantine", "discard", "2")
        assert code != 0
        assert "--reason" in out  # a discard without a reason is not carried out
        code, out = _vigil(data, "quarantine", "discard", "2", "--reason", "a test message")
        assert (code, out.strip()) == (0, "item 2: discarded")
        code, out = _vigil(data, "quarantine", "retry", "3")
        assert code != 0
        assert "item 3 is still refused" in out
        code, out = _vigil(data, "quarantine", "resend", "2", "--file", "-", stdin=FIXED)
        assert code != 0
        assert "already resolved: discarded" in out
        sign_in(data, "dr.osei", Role.CLINICIAN)
        code, out = _vigil(data, "quarantine", "resolve", "3", "--reason", "not mine to close")
        assert code != 0
        assert "quarantine.resolve" in out
        sign_in(data, "op.kim", Role.OPERATOR)
    # No node now: the CLI carries the action out itself, by the same rules.
    code, out = _vigil(data, "quarantine", "resolve", "3", "--reason", "the lab sent it again corrected")
    assert (code, out.strip()) == (0, "item 3: resolved")
    items = _items(data)
    assert {
        qid: (i["resolved"], i["resolved_by"], i["note"]) for qid, i in items.items() if i["resolved"] is not None
    } == {
        1: (items[1]["resolved"], "op.kim", "PID from ADT"),
        2: ("discarded", "op.kim", "a test message"),
        3: ("resolved", "op.kim", "the lab sent it again corrected"),
    }
    assert items[4]["resolved"] is None
    records = _log(data)
    [resent] = [(source, raw) for kind, source, raw in records if kind == "ORU^R01"]
    assert resent == ("quarantine:1", FIXED)
    assert f"LSN {[r[0] for r in records].index('ORU^R01') + 1}" in str(items[1]["resolved"])
    audit = [json.loads(raw)["event"] for kind, _, raw in records if kind == "AUDIT^ACCESS"]
    acted = [
        (a["action"], a["user"], a["outcome"], a["detail"]) for a in audit if a["action"].startswith("quarantine_")
    ]
    assert [(action, user, outcome) for action, user, outcome, _ in acted if action != "quarantine_list"] == [
        ("quarantine_resend", "op.kim", "allowed"),
        ("quarantine_discard", "op.kim", "allowed"),
        ("quarantine_retry", "op.kim", "allowed"),  # tried, and said why not (below)
        ("quarantine_resend", "op.kim", "allowed"),
        ("quarantine_resolve", "dr.osei", "denied"),  # a refused attempt is in the trail too
        ("quarantine_resolve", "op.kim", "allowed"),
    ]
    details = [detail for action, _, _, detail in acted if action != "quarantine_list"]
    assert details[0].startswith("item 1: resent as edited: LSN")
    assert details[0].endswith("; PID from ADT")
    assert details[2] == "item 3: not done: item 3 is still refused: ORU^R01 requires a PID segment and has none"
    assert details[3] == "item 2: not done: item 2 is already resolved: discarded"
