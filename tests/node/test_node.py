"""The node as a real process: stdin and MLLP in, ACKs out, hostile peers, SIGTERM and SIGKILL.

Every test starts `bin/vigil run` and talks to it over loopback only.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from engine.auth import Role
from engine.core.feedgen import FeedMix, generate_feed
from engine.core.hl7 import parse
from engine.core.mllp import MLLPDecoder
from engine.wal import OSFiles, open_wal
from engine.wal.quarantine import Quarantine
from tests.harness.helpers import MSH_ADT, PID, hl7, oru
from tests.harness.node_process import NO_PID, ROOT, VIGIL, exchange, log_ids, message, node
from tests.harness.sessions import sign_in

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and bin/vigil")


def test_stdin_answers_every_message_and_refuses_none_silently(tmp_path: Path) -> None:
    """--stdin: one JSON line per message; the bad one is rejected into quarantine; exit 1."""
    feed = message(1) + NO_PID + hl7(MSH_ADT, PID)
    proc = subprocess.run(
        [VIGIL, "run", "--stdin", "--data", str(tmp_path)], input=feed, capture_output=True, timeout=120, check=False
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1
    assert [r["outcome"] for r in rows] == ["accepted", "rejected", "accepted"]
    assert rows[1]["error"]["quarantine_id"] == 1
    again = subprocess.run(
        [VIGIL, "run", "--stdin", "--data", str(tmp_path)],
        input=message(1),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0
    assert json.loads(again.stdout) == {"outcome": "accepted", "lsns": [1], "duplicate": True}


def test_mllp_acks_after_durability_and_stops_on_sigterm(tmp_path: Path) -> None:
    """AA for a good message, AR with an ERR segment for a bad one, the same AA for a redelivery; SIGTERM exits 0."""
    with node(tmp_path) as (proc, port):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            decoder = MLLPDecoder()
            ok = parse(exchange(conn, message(7), decoder))
            bad = parse(exchange(conn, NO_PID, decoder))
            again = parse(exchange(conn, message(7), decoder))
        assert (ok.get("MSA-1"), ok.get("MSA-2")) == ("AA", "CTL000007")
        assert (bad.get("MSA-1"), bad.get("MSA-2"), bad.get("ERR-2.1")) == ("AR", "BAD1", "PID")
        assert again.get("MSA-1") == "AA"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert log_ids(tmp_path) == ["hl7:LAB|GENHOSP|CTL000007"]


def test_two_messages_in_one_mllp_frame_are_refused_whole(tmp_path: Path) -> None:
    """AR naming the second MSH, both kept in quarantine, neither stored: nothing in between."""
    with node(tmp_path) as (_, port), socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        nak = parse(exchange(conn, message(1) + message(2), MLLPDecoder()))
        ok = parse(exchange(conn, message(3), MLLPDecoder()))
    assert (nak.get("MSA-1"), nak.get("MSA-2"), nak.get("ERR-2.1")) == ("AR", "CTL000001", "MSH")
    assert ok.get("MSA-1") == "AA"
    assert log_ids(tmp_path) == ["hl7:LAB|GENHOSP|CTL000003"]
    [kept] = Quarantine(tmp_path / "quarantine", OSFiles()).items()
    assert kept.raw == message(1) + message(2)


def test_only_messages_are_answered_and_an_oversized_one_by_its_control_id(tmp_path: Path) -> None:
    """A stray start block and an empty frame get no unsolicited AR (the next reply is the next message's);
    a frame over the size limit gets AR echoing its MSH-10."""
    config = tmp_path / "vigil.toml"
    config.write_text("[ingest]\nmessage_bytes_max = 4096\n")
    big = oru(*[f"OBX|{n}|ST|X||{'y' * 100}|||N|||F" for n in range(60)])
    with node(tmp_path / "data", config=config) as (_, port), socket.create_connection(("127.0.0.1", port)) as conn:
        conn.settimeout(30)
        decoder = MLLPDecoder()
        conn.sendall(b"\x0b" + b"\x0b\x1c\r")  # a stray start block, then an empty frame
        first = parse(exchange(conn, message(31), decoder))
        refused = parse(exchange(conn, big, decoder))
        after = parse(exchange(conn, message(32), decoder))
    assert (first.get("MSA-1"), first.get("MSA-2")) == ("AA", "CTL000031")
    assert (refused.get("MSA-1"), refused.get("MSA-2")) == ("AR", "MSG0001")
    assert (after.get("MSA-1"), after.get("MSA-2")) == ("AA", "CTL000032")


def test_a_critical_result_is_answered_while_a_large_message_is_parsed(tmp_path: Path) -> None:
    """An 8 MB ORU (150,000 OBX) is parsed in a worker: a critical result sent after it is answered first."""
    msh = "MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261124101500||ORU^R01^ORU_R01|BIG1|P|2.5.1"
    big = oru(*[f"OBX|{n}|NM|2823-3^K^LN||4.{n % 10}|mmol/L|3.5-5.1|N|||F" for n in range(150_000)], msh=msh)
    critical = message(77).replace(b"|N|||F", b"|HH|||F").replace(b"4.1", b"6.9")
    order: list[str] = []
    with node(tmp_path) as (_, port):
        slow = socket.create_connection(("127.0.0.1", port), timeout=120)
        fast = socket.create_connection(("127.0.0.1", port), timeout=120)
        try:

            def big_one() -> None:
                order.append(parse(exchange(slow, big, MLLPDecoder())).get("MSA-2") or "")

            sender = threading.Thread(target=big_one)
            sender.start()
            time.sleep(0.5)  # the large frame is on its way (an ordering test: no time is asserted)
            order.append(parse(exchange(fast, critical, MLLPDecoder())).get("MSA-2") or "")
            sender.join(timeout=120)
        finally:
            slow.close()
            fast.close()
    assert order == ["CTL000077", "BIG1"]


def test_a_critical_result_is_durable_and_answered_while_a_20000_message_billing_file_is_ingested(
    tmp_path: Path,
) -> None:
    """Issue 16's ordering: a critical result sent once a file of 20,000 DFT^P03 is under way is answered AA
    before the file is done, and lands in the log among the file's records, not after them."""
    drop = tmp_path / "drop"
    drop.mkdir()
    config = tmp_path / "vigil.toml"
    config.write_text("[ingest]\nwatch_poll_interval_s = 0.1\n")
    billing = generate_feed(20_000, seed=7, mix=FeedMix(0, 0, 0, 0, 0, 0, 1), id_prefix="F")
    critical = message(77).replace(b"|N|||F", b"|HH|||F").replace(b"4.1", b"6.9")
    with node(tmp_path / "data", "--watch", str(drop), config=config) as (_, port):
        (drop / "billing.hl7.tmp").write_bytes(b"".join(billing))
        (drop / "billing.hl7.tmp").rename(drop / "billing.hl7")
        time.sleep(1.0)  # taken and under way (an ordering test: no time is asserted)
        with socket.create_connection(("127.0.0.1", port), timeout=120) as conn:
            ack = parse(exchange(conn, critical, MLLPDecoder()))
        file_done_at_ack = (drop / "done" / "billing.hl7").exists()
        for _ in range(600):
            if (drop / "done" / "billing.hl7").exists():
                break
            time.sleep(0.1)
    assert (ack.get("MSA-1"), ack.get("MSA-2")) == ("AA", "CTL000077")
    assert not file_done_at_ack
    ids = log_ids(tmp_path / "data")
    from_file = [i for i, m in enumerate(ids) if m.rsplit("|", 1)[-1].startswith("F")]
    assert len(from_file) == 20_000
    assert from_file[0] < ids.index("hl7:LAB|GENHOSP|CTL000077") < from_file[-1]


def test_vigil_send_and_the_hl7_package_client_interoperate(tmp_path: Path) -> None:
    """`vigil send` prints each ACK; the `hl7` package's MLLP client reads ours as any other."""
    import hl7.client

    source = tmp_path / "feed.hl7"
    source.write_bytes(message(1) + message(2))
    with node(tmp_path / "data") as (_, port):
        sent = subprocess.run(
            [VIGIL, "send", str(source), "--to", f"127.0.0.1:{port}", "--json"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        rows = [json.loads(line) for line in sent.stdout.splitlines()]
        assert sent.returncode == 0, sent.stderr
        assert [(r["code"], r["control_id"]) for r in rows] == [("AA", "CTL000001"), ("AA", "CTL000002")]
        with hl7.client.MLLPClient("127.0.0.1", port) as client:
            ack = client.send_message(message(3).decode().rstrip("\r"))
        assert b"MSA|AA|CTL000003" in ack  # the hl7 client returns the raw MLLP response
        # Several sources in one call, over one connection: files, a folder (by name), a glob.
        folder = tmp_path / "feeds"
        folder.mkdir()
        (folder / "b.hl7").write_bytes(message(5))
        (folder / "a.hl7").write_bytes(message(4))
        (folder / "c.txt").write_bytes(b"not hl7 at all")
        (tmp_path / "late-6.hl7").write_bytes(message(6))
        many = subprocess.run(
            [VIGIL, "send", str(folder), str(tmp_path / "late-*.hl7"), "--to", f"127.0.0.1:{port}"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        out = many.stdout.decode()
        assert many.returncode == 1  # one piece was no HL7 v2 message: not sent, and said
        assert out.index("a.hl7") < out.index("b.hl7") < out.index("c.txt") < out.index("late-6.hl7")
        assert "4 sent: AA 3, not sent 1" in out
        missing = subprocess.run(
            [VIGIL, "send", str(tmp_path / "none-*.hl7"), "--to", f"127.0.0.1:{port}"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert missing.returncode == 1
        assert "no file matches" in missing.stderr.decode()


def test_a_hostile_connection_never_blocks_the_others(tmp_path: Path) -> None:
    """A peer that never ends its frame, and one sending an oversized frame, do not delay a good peer."""
    config = tmp_path / "vigil.toml"
    config.write_text("[ingest]\nmessage_bytes_max = 4096\n")
    with node(tmp_path / "data", config=config) as (_, port):
        stuck = socket.create_connection(("127.0.0.1", port), timeout=30)
        stuck.sendall(b"\x0bMSH|^~\\&|never ends")
        big = socket.create_connection(("127.0.0.1", port), timeout=30)
        decoder = MLLPDecoder()
        nak = parse(exchange(big, b"MSH|^~\\&|" + b"x" * 10_000, decoder))
        assert nak.get("MSA-1") == "AR"
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as good:
            for n in range(20):
                assert parse(exchange(good, message(100 + n), MLLPDecoder())).get("MSA-1") == "AA"
        assert time.monotonic() - started < 20
        stuck.close()
        big.close()


def test_three_hundred_trickling_connections_from_one_address_lock_no_one_out(tmp_path: Path) -> None:
    """300 peers on 127.0.0.1 open a frame and trickle; a sender on 127.0.0.2 keeps getting AA meanwhile."""
    with node(tmp_path) as (_, port):
        tricklers: list[socket.socket] = []
        for _ in range(300):
            peer = socket.create_connection(("127.0.0.1", port), timeout=10)
            with contextlib.suppress(OSError):  # refused past the per-address cap: closed by the node
                peer.sendall(b"\x0bMSH|")
            tricklers.append(peer)
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.5):
                for peer in tricklers:
                    with contextlib.suppress(OSError):
                        peer.send(b"x")

        dripping = threading.Thread(target=trickle, daemon=True)
        dripping.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30, source_address=("127.0.0.2", 0)) as good:
                for n in range(20):
                    assert parse(exchange(good, message(500 + n), MLLPDecoder())).get("MSA-1") == "AA"
        finally:
            stop.set()
            dripping.join(timeout=10)
            for peer in tricklers:
                peer.close()


def _sender(port: int, acked: list[str], stop: threading.Event, first: int) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            decoder = MLLPDecoder()
            n = first
            while not stop.is_set():
                ack = parse(exchange(conn, message(n), decoder))
                if ack.get("MSA-1") == "AA":
                    acked.append(f"hl7:LAB|GENHOSP|CTL{n:06d}")
                n += 1
    except (OSError, AssertionError):
        return  # the node was killed mid-exchange: that message was never acknowledged


def test_sigkill_through_mllp_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Kill -9 at random moments while four connections send: every AA'd message is in the log."""
    seed = int(os.environ.get("VIGIL_CRASH_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(seed)
    acked: list[str] = []
    for run in range(5):
        with node(tmp_path) as (proc, port):
            stop = threading.Event()
            senders = [
                threading.Thread(target=_sender, args=(port, acked, stop, 10_000 * (4 * run + k))) for k in range(4)
            ]
            for t in senders:
                t.start()
            time.sleep(rng.uniform(0.2, 0.8))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            stop.set()
            for t in senders:
                t.join(timeout=30)
    logged = set(log_ids(tmp_path))
    missing = [m for m in acked if m not in logged]
    assert not missing, f"acknowledged but lost (seed {seed}): {missing[:5]}"
    assert len(acked) > 20, f"too few messages acknowledged to mean anything (seed {seed})"


def _cli(*args: str) -> tuple[int, str]:
    proc = subprocess.run([VIGIL, *args], capture_output=True, timeout=120, check=False)
    return proc.returncode, proc.stdout.decode()


def test_status_patient_and_log_from_a_running_node_and_after_it(tmp_path: Path) -> None:
    """status asks the node; patient asks its actor, or folds the log once it stopped: the same record."""
    critical = oru("OBX|1|NM|2823-3^K^LN||6.9|mmol/L|3.5-5.1|HH|||F")
    with node(tmp_path) as (proc, port):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            decoder = MLLPDecoder()
            assert parse(exchange(conn, critical, decoder)).get("MSA-1") == "AA"
            assert parse(exchange(conn, message(2), decoder)).get("MSA-1") == "AA"
        sign_in(tmp_path, "dr.osei")
        code, out = _cli("status", "--data", str(tmp_path), "--json")
        report = json.loads(out)
        assert code == 0
        assert report["wal"]["last_lsn"] == 3  # the two messages, then the login's audit event
        assert {lane["lane"]: lane["done"] for lane in report["lanes"]} == {"critical": 1, "standard": 1, "batch": 0}
        tree = [(child["name"], child["state"], child["restarts"]) for child in report["supervision"]]
        names = ["log", "patients", "lanes", "search", "admin", "summaries", "collector", "alerts", "mllp"]
        assert tree == [(name, "running", 0) for name in names]
        code, out = _cli("status", "--data", str(tmp_path))
        assert code == 0
        assert "Supervision (node)" in out
        code, out = _cli("patient", "GENHOSP|MRN42", "--data", str(tmp_path), "--json")
        live = json.loads(out)
        assert code == 0
        [potassium] = live["results"]  # both messages report the same order's potassium: two versions
        assert [version[-1]["value"] for version in potassium["versions"]] == ["6.9", "4.1"]
        code, out = _cli("log", "--data", str(tmp_path), "--lane", "critical", "--json")
        assert [json.loads(line)["lsn"] for line in out.splitlines()] == [1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    code, out = _cli("patient", "GENHOSP|MRN42", "--data", str(tmp_path), "--json")
    assert code == 0
    assert json.loads(out) == live
    code, _ = _cli("status", "--data", str(tmp_path))
    assert code != 0  # no node to ask


@pytest.mark.parametrize("key", ["", "k" * 32])
def test_a_node_without_an_audit_key_says_so_at_start_and_in_status(tmp_path: Path, key: str) -> None:
    """No key: a warning at start naming the variable, and `vigil status` (and --json) says NOT KEYED."""
    env = {**os.environ, "VIGIL_AUDIT_KEY": key}
    args = [VIGIL, "run", "--mllp", "127.0.0.1:0", "--data", str(tmp_path)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    try:
        assert proc.stdout is not None
        assert "listening on" in proc.stdout.readline().decode()
        sign_in(tmp_path, "op.li", Role.OPERATOR)
        status = subprocess.run([VIGIL, "status", "--data", str(tmp_path), "--json"], capture_output=True, check=True)
        plain = subprocess.run([VIGIL, "status", "--data", str(tmp_path)], capture_output=True, check=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert json.loads(status.stdout)["audit"]["keyed"] is bool(key)
    assert (b"NOT KEYED" in plain.stdout) is not bool(key)
    warned = [json.loads(line) for line in err.splitlines() if b"node.audit_unkeyed" in line]
    assert [w["variable"] for w in warned] == ([] if key else ["VIGIL_AUDIT_KEY"])


def test_no_phi_reaches_the_logs(tmp_path: Path) -> None:
    """Canary PHI through accepted and refused messages: none of it appears in the node's logs."""
    name, mrn, birth = "Zyxwvutsrqp", "CANARY98765", "19230417"
    pid = f"PID|1||{mrn}^^^GENHOSP^MR||{name}^Qwertyuiop||{birth}|F|||1 Canary Row^^Springfield"
    good = hl7("MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|2026||ORU^R01|C1|P|2.5.1", pid, "OBX|1|ST|X||Zyxwvutsrqp note|||HH")
    bad = hl7("MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|2026||ORU^R01|C2|P|2.5.1", f"PID|1||^^^X||{name}||{birth}")
    proc = subprocess.run(
        [VIGIL, "run", "--stdin", "--data", str(tmp_path)],
        input=good + bad,
        capture_output=True,
        timeout=120,
        check=False,
    )
    logs = proc.stderr.decode()
    assert "node.rejected" in logs  # the logs are there, and say what happened
    for canary in (name, mrn, birth, "Canary Row"):
        assert canary not in logs, f"{canary} leaked into the logs"


def test_a_watched_folder_moves_each_file_to_done_or_failed(tmp_path: Path) -> None:
    """Good files go to done/; a file with a refused message goes to failed/ with a reason file; nothing is deleted."""
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "good.hl7").write_bytes(message(1) + message(2))
    (drop / "mixed.hl7").write_bytes(message(3) + NO_PID)
    (drop / ".hidden.hl7").write_bytes(message(4))
    proc = subprocess.Popen(
        [VIGIL, "run", "--watch", str(drop), "--data", str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while not ((drop / "done" / "good.hl7").exists() and (drop / "failed" / "mixed.hl7").exists()):
            assert time.monotonic() < deadline, "the files were not taken"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        if proc.stdout is not None:
            proc.stdout.close()
    reason = json.loads((drop / "failed" / "mixed.hl7.reason.json").read_bytes())
    assert [r["outcome"] for r in reason] == ["accepted", "rejected"]
    assert (drop / ".hidden.hl7").exists()  # ignored, not taken
    assert sorted(log_ids(tmp_path / "data")) == [f"hl7:LAB|GENHOSP|CTL00000{n}" for n in (1, 2, 3)]


def _watch_until(drop: Path, data: Path, config: Path | None, *expected: Path) -> None:
    """A `vigil run --watch` process until every expected path exists (60 s at most), then stopped."""
    args = [VIGIL, *(["--config", str(config)] if config else []), "run", "--watch", str(drop), "--data", str(data)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not all(p.exists() for p in expected):
            assert time.monotonic() < deadline, f"not all of {[p.name for p in expected]} appeared"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_a_file_dropped_again_under_its_name_overwrites_nothing(tmp_path: Path) -> None:
    """done/feed.hl7 stays; the second feed.hl7 becomes done/feed.2.hl7 (and failed/ keeps its reasons apart)."""
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "feed.hl7").write_bytes(message(1))
    _watch_until(drop, tmp_path / "data", None, drop / "done" / "feed.hl7")
    (drop / "feed.hl7").write_bytes(message(2))
    _watch_until(drop, tmp_path / "data", None, drop / "done" / "feed.2.hl7")
    assert (drop / "done" / "feed.hl7").read_bytes() == message(1)
    assert (drop / "done" / "feed.2.hl7").read_bytes() == message(2)


def test_the_size_limits_hold_on_stdin_and_in_the_drop_folder(tmp_path: Path) -> None:
    """A message over message_bytes_max is refused (and quarantined) there too; a file over input_bytes_max
    goes to failed/ unread; stdin over input_bytes_max is refused in one line, nothing ingested."""
    config = tmp_path / "vigil.toml"
    config.write_text("[ingest]\nmessage_bytes_max = 4096\ninput_bytes_max = 16384\n")
    big = oru(*[f"OBX|{n}|ST|X||{'y' * 100}|||N|||F" for n in range(60)])
    assert 4096 < len(big) < 16384
    run = [VIGIL, "--config", str(config), "run", "--stdin", "--data", str(tmp_path / "data")]
    proc = subprocess.run(run, input=message(1) + big + message(2), capture_output=True, timeout=120, check=False)
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["outcome"] for r in rows] == ["accepted", "rejected", "accepted"]
    assert "message_bytes_max" in rows[1]["error"]["reason"]
    assert Quarantine(tmp_path / "data" / "quarantine", OSFiles()).items()[0].raw == big
    huge = subprocess.run(run, input=message(3) * 200, capture_output=True, timeout=120, check=False)
    assert huge.returncode == 1
    assert b"input_bytes_max" in huge.stderr
    assert b"Traceback" not in huge.stderr
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "huge.hl7").write_bytes(message(4) * 200)
    _watch_until(drop, tmp_path / "data", config, drop / "failed" / "huge.hl7.reason.json")
    [reason] = json.loads((drop / "failed" / "huge.hl7.reason.json").read_bytes())
    assert "input_bytes_max" in reason["error"]["reason"]
    assert (drop / "failed" / "huge.hl7").read_bytes() == message(4) * 200
    assert sorted(log_ids(tmp_path / "data")) == ["hl7:LAB|GENHOSP|CTL000001", "hl7:LAB|GENHOSP|CTL000002"]


def test_top_refreshes_until_interrupted(tmp_path: Path) -> None:
    """`vigil top` shows the live status and leaves quietly on Ctrl-C."""
    sign_in(tmp_path, "op.kim", Role.OPERATOR)  # no node yet: the CLI logs in over the store and log itself
    with (
        node(tmp_path),
        subprocess.Popen(
            [VIGIL, "top", "--data", str(tmp_path), "--interval-s", "0.2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as top,
    ):
        time.sleep(2.0)
        top.send_signal(signal.SIGINT)
        out, err = top.communicate(timeout=30)
    assert top.returncode == 0, err
    assert b"critical" in out


def test_stdin_keeps_every_patients_order_across_lanes(tmp_path: Path) -> None:
    """A stream goes in lane groups (engine.core.windows); each patient's messages still reach the log in input order."""
    from engine.core.decode import Decoder
    from engine.core.feedgen import generate_feed

    feed = generate_feed(1500, seed=77, patients=12)
    decoder = Decoder()
    sent: dict[str, list[str]] = {}
    for raw in feed:
        env = decoder.hl7(raw, received_at="t", source="test")
        sent.setdefault(env.patient or "", []).append(env.message_id)
    done = subprocess.run(
        [VIGIL, "run", "--stdin", "--data", str(tmp_path / "data")],
        input=b"".join(feed),
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-500:]
    assert len(done.stdout.splitlines()) == len(feed)

    async def logged() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        async with open_wal(tmp_path / "data" / "wal") as wal:
            for r in wal.read_from(1):
                found.setdefault(r.envelope.patient or "", []).append(r.message_id)
        return found

    assert anyio.run(logged) == sent


def test_stdin_parsed_in_worker_processes_answers_as_the_loop_does(tmp_path: Path) -> None:
    """A large input parsed in a worker process: the same answers, refusals and per-patient order as in the loop."""
    from engine.core.feedgen import generate_feed

    feed = generate_feed(1200, seed=78, patients=12)
    feed[300:300] = [NO_PID]
    answers: dict[str, list[tuple[str, bool]]] = {}
    logged: dict[str, dict[str, list[str]]] = {}
    for name, workers in (("loop", 0), ("workers", 1)):
        config = tmp_path / f"{name}.toml"
        config.write_text(f"[ingest]\nparse_workers = {workers}\nparse_pool_messages_min = 100\n")
        done = subprocess.run(
            [VIGIL, "--config", str(config), "run", "--stdin", "--data", str(tmp_path / name)],
            input=b"".join(feed),
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 1, done.stderr.decode()[-500:]  # the one refusal
        assert (b"parse_pool.started" in done.stderr) == bool(workers)
        assert b"parse_pool.failed" not in done.stderr
        rows = [json.loads(line) for line in done.stdout.splitlines()]
        answers[name] = [(r["outcome"], r.get("duplicate", False)) for r in rows]

        async def by_patient(data: Path) -> dict[str, list[str]]:
            found: dict[str, list[str]] = {}
            async with open_wal(data / "wal") as wal:
                for r in wal.read_from(1):
                    found.setdefault(r.envelope.patient or "", []).append(r.message_id)
            return found

        logged[name] = anyio.run(by_patient, tmp_path / name)
    assert answers["workers"] == answers["loop"]
    assert [i for i, (outcome, _) in enumerate(answers["workers"]) if outcome != "accepted"] == [300]
    assert logged["workers"] == logged["loop"]


def test_a_setting_no_part_of_the_node_carries_out_is_refused_at_start(tmp_path: Path) -> None:
    """Retention in a cluster is not built (a takeover may need unpublished records): a node says so at start."""
    config = tmp_path / "vigil.toml"
    config.write_text(
        '[retention]\narchive = "archive"\nbatch_days = 1\n'
        '[cluster]\nenabled = true\nservers = ["nats://127.0.0.1:1"]\n'
    )
    proc = subprocess.run(
        [VIGIL, "--config", str(config), "run", "--mllp", "127.0.0.1:0", "--data", str(tmp_path / "data")],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert b"does not archive its log yet" in proc.stderr
