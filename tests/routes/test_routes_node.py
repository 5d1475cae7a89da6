"""Routes in a real `vigil run` process: delivery, `vigil routes` for an operator, and SIGKILL mid-delivery."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import anyio

from engine.auth import Role
from engine.core.mllp import MLLPDecoder
from engine.wal import open_wal
from tests.harness.helpers import hl7
from tests.harness.mllp_receiver import Received, Receiver
from tests.harness.node_process import ROOT, VIGIL, exchange, log_ids, node
from tests.harness.sessions import sign_in


def _message(n: int, patients: int = 7) -> bytes:
    """A result for one of `patients` patients; MSH-10 is R{n:07d}."""
    msh = f"MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261205101500||ORU^R01^ORU_R01|R{n:07d}|P|2.5.1"
    pid = f"PID|1||MRN{n % patients}^^^GENHOSP^MR||Doe^Jane"
    return hl7(msh, pid, "OBR|1|P100|F200|80048^BMP^CPT", "OBX|1|NM|2823-3^K^LN||4.1|mmol/L|3.5-5.1|N|||F")


def _config(tmp_path: Path, port: int, **extra: str) -> Path:
    lines = [f"{key} = {value}" for key, value in extra.items()]
    text = (ROOT / "config.toml").read_text() + "\n".join(
        ["", "[[routes]]", 'name = "ehr"', f'destination = "mllp://127.0.0.1:{port}"', *lines, ""]
    )
    path = tmp_path / "vigil.toml"
    path.write_text(text)
    return path


def _vigil(config: Path, *args: str) -> tuple[int, str]:
    proc = subprocess.run([VIGIL, "--config", str(config), *args], capture_output=True, timeout=60, check=False)
    return proc.returncode, (proc.stdout + proc.stderr).decode()


def _order_per_patient(received: list[Received]) -> dict[bytes, list[str]]:
    """Each patient's control ids in the order first delivered."""
    seen: set[str] = set()
    out: dict[bytes, list[str]] = {}
    for item in received:
        if item.control_id not in seen:
            seen.add(item.control_id)
            out.setdefault(item.raw.split(b"\rPID|1||", 1)[1].split(b"^", 1)[0], []).append(item.control_id)
    return out


def test_a_node_delivers_and_an_operator_sees_and_resolves_a_refusal(tmp_path: Path) -> None:
    (tmp_path / "downstream").mkdir()
    receiver = Receiver(tmp_path / "downstream")
    receiver.start()
    receiver.set_mode("AA", refuse=("R0000003",))
    config = _config(tmp_path, receiver.port, retry_base_s="0.05")
    data = tmp_path / "data"
    try:
        with node(data, config=config) as (_proc, port), socket.create_connection(("127.0.0.1", port)) as conn:
            decoder = MLLPDecoder()
            for n in range(1, 43):
                assert b"MSA|AA|" in exchange(conn, _message(n), decoder)
            received = receiver.wait_for(36)  # MRN3's six are held behind its refused first
            assert len({r.control_id for r in received}) == 36
            sign_in(data, "ops", Role.OPERATOR, config=config)
            code, out = _vigil(config, "routes", "--data", str(data), "--json")
            assert code == 0, out
            [route] = json.loads(out)
            assert (route["name"], route["refused_open"], route["held_patients"]) == ("ehr", 1, 1)
            code, out = _vigil(config, "routes", "errors", "ehr", "--data", str(data), "--json")
            [refusal] = [json.loads(line) for line in out.splitlines()]
            assert (refusal["code"], refusal["message_id"]) == ("AR", "hl7:LAB|GENHOSP|R0000003")
            assert "patient" not in refusal
            code, out = _vigil(config, "routes", "show", "ehr", str(refusal["lsn"]), "--data", str(data))
            assert code != 0, "the answer text is log content: an operator must break the glass for it"
            receiver.set_mode("AA")
            code, out = _vigil(config, "routes", "retry", "ehr", str(refusal["lsn"]), "--data", str(data))
            assert code == 0, out
            received = receiver.wait_for(42)
            code, out = _vigil(config, "routes", "--data", str(data))
            assert code == 0
            assert "ehr -> mllp://" in out
            code, out = _vigil(config, "routes", "replay", "ehr", "--patient", "GENHOSP|MRN3", "--data", str(data))
            assert code == 0, out
            deadline = time.monotonic() + 30
            while len(receiver.received()) < len(received) + 6 and time.monotonic() < deadline:
                time.sleep(0.05)
            replayed = [r.control_id for r in receiver.received()[len(received) :]]
    finally:
        receiver.kill()
    assert len({r.control_id for r in received}) == 42
    assert _order_per_patient(received)[b"MRN3"] == [f"R{n:07d}" for n in range(3, 43, 7)]
    assert replayed == [f"R{n:07d}" for n in range(3, 43, 7)]  # her history again, in log order
    acted = [(e["action"], e.get("user", ""), e.get("detail", ""), patient) for patient, e in _audit_events(data)]
    assert [a for a in acted if a[0] in {"route_retry", "route_replay"} and a[2]] == [
        ("route_retry", "ops", f"ehr: LSN {refusal['lsn']}", "GENHOSP|MRN3"),
        ("route_replay", "ops", "ehr: from LSN 1", "GENHOSP|MRN3"),
    ]


def _audit_events(data: Path) -> list[tuple[str, dict[str, str]]]:
    """The audit trail in the log: (patient, event), in order."""

    async def read() -> list[tuple[str, dict[str, str]]]:
        async with open_wal(data / "wal") as wal:
            docs = [json.loads(r.envelope.raw) for r in wal.read_from(1) if r.envelope.message_type == "AUDIT^ACCESS"]
        return [(doc["patient"], doc["event"]) for doc in docs]

    return anyio.run(read)


def _send(port: int, first: int, acked: list[int], stop: threading.Event) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            decoder = MLLPDecoder()
            n = first
            while not stop.is_set():
                if b"MSA|AA|" in exchange(conn, _message(n), decoder):
                    acked.append(n)
                n += 1
    except (OSError, AssertionError):
        return  # killed mid-exchange: that message was never acknowledged


def test_sigkill_mid_delivery_delivers_every_acknowledged_message_in_order(tmp_path: Path) -> None:
    """Kill -9 the node three times while it receives and delivers: nothing lost, order kept per patient."""
    seed = int(os.environ.get("VIGIL_CRASH_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(seed)
    (tmp_path / "downstream").mkdir()
    receiver = Receiver(tmp_path / "downstream")
    receiver.start()
    config = _config(tmp_path, receiver.port, connections="3")
    data = tmp_path / "data"
    acked: list[int] = []
    try:
        for run in range(3):
            with node(data, config=config) as (proc, port):
                stop = threading.Event()
                senders = [
                    threading.Thread(target=_send, args=(port, 1_000_000 * run + 100_000 * k, acked, stop))
                    for k in range(3)
                ]
                for thread in senders:
                    thread.start()
                time.sleep(rng.uniform(0.3, 0.9))
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                stop.set()
                for thread in senders:
                    thread.join(timeout=30)
        wanted = {f"R{n:07d}" for n in acked}
        with node(data, config=config):  # one last run delivers what the kills left behind
            deadline = time.monotonic() + 60
            while not wanted <= {r.control_id for r in receiver.received()} and time.monotonic() < deadline:
                time.sleep(0.05)
            received = receiver.received()
    finally:
        receiver.kill()
    delivered = [r.control_id for r in received]
    missing = wanted - set(delivered)
    assert not missing, f"acknowledged but never delivered (seed {seed}): {sorted(missing)[:5]}"
    assert len(acked) > 50, f"too few messages acknowledged to mean anything (seed {seed})"
    position = {message_id: lsn for lsn, message_id in enumerate(log_ids(data), start=1)}
    for patient, ids in _order_per_patient(received).items():
        lsns = [position[f"hl7:LAB|GENHOSP|{i}"] for i in ids]
        assert lsns == sorted(lsns), f"delivered out of log order for {patient!r} (seed {seed})"
    # At least once: what was delivered after the last save (every 50 ms) before a kill goes again.
    duplicates = len(delivered) - len(set(delivered))
    assert duplicates <= 3 * 150, f"{duplicates} duplicates: more than the kills' windows (seed {seed})"
