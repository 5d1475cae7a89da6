"""Does a STAT result wait behind billing? ACK latency of critical and standard traffic under billing floods.

Measured from outside a real `vigil run` process (MLLP and a watched
folder), as a hospital would see it. The probes run in this process: one
connection sending critical results (ORU^R01, OBX-8 = HH) and one sending
routine results, each at a steady rate, timing send to ACK. The floods run
in another process at a lower CPU priority (nice 10), as senders on other
hosts would: 16 MLLP connections sending DFT^P03 back to back, a file of
DFT^P03 dropped into the watched folder, a JetStream stream holding a
backlog of DFT^P03 when the node starts (a real nats-server), or all three
at once. Not billing but one patient: `history` is a patient with 30,000
results (years of a chronic patient's labs, or a merge that brought them)
who gets 16 more now and then, goes idle and is sent away (snapshot saved)
by 512 other patients' messages, then comes back (snapshot read): its
record is encoded and decoded while the probes run (`actors.active_max` is
512 in that scenario; not part of `all`).

Each scenario reports critical and standard p50/p99 and their ratio to the
idle run, and the billing throughput beside what the same flood achieves
with no clinical traffic (lanes must not buy isolation by starving batch).
The same scenarios run with the lanes off (`lanes.scheduler.mode = "fifo"`,
one queue in arrival order) as the baseline, in the same run.

Issue 16's goal, per flood: critical p99 <= max(1.5 x idle p99, idle p99 +
2 ms), p50 <= idle p50 + 0.5 ms; standard p99 <= 2 x idle p99; batch >= 50%
of solo.
"""

from __future__ import annotations

import argparse
import contextlib
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

import anyio
import msgspec
from _harness import arguments, fail_if, probe
from rich.console import Console
from rich.table import Table

from engine.core.feedgen import FeedMix, generate_feed
from engine.core.mllp import Frame, MLLPDecoder, frame
from tests.harness.nats_server import fill_stream, nats_server  # bin/bench puts the repository on the path
from tests.harness.node_process import log_ids

ROOT = Path(__file__).resolve().parents[1]
VIGIL = str(ROOT / "bin" / "vigil")
_FLOOD = "--flood"  # this script, run as the flood process
_PROBE_RATE = 50.0  # messages per second on each probe connection
_BILLING = FeedMix(0, 0, 0, 0, 0, 0, 1)
_CRITICAL = FeedMix(0, 0, 1, 0, 0, 0, 0)
_ROUTINE = FeedMix(0, 1, 0, 0, 0, 0, 0)
_FLOODS = ("mllp", "file", "nats", "all", "console", "history")
_LONG_MESSAGES = 6_000  # x 5 results each: the long history's 30,000 facts
_ACTIVE_MAX = 512  # [actors] active_max in the `history` scenario: that many others send the long record away
_CONSOLE_SESSIONS = 50  # browsers polling the web console's status view
_CONSOLE_POLL_S = 1.0  # each polls this often (the console's page polls every 2 s: twice what it does)
_CONSOLE_USER = ("bench.op", "correct horse battery staple", "4321")


# -- the flood process --------------------------------------------------------------


def _flood(kind: str, port: int, drop: Path, seconds: float, file_messages: int) -> None:
    """Billing as other hosts would send it, at a lower CPU priority; prints its answers per second (JSON).

    `console`: no billing, but 50 browser sessions signed in to the web console (`port` is then the
    node's HTTP port), each polling the status view, as operators' screens on other hosts would.
    """
    os.nice(10)
    if kind == "console":
        _console_flood(port, seconds)
        return
    if kind == "history":
        _history_flood(port, seconds)
        return
    counted = [0]
    # Made before the clock starts: sixteen feeds take seconds to generate.
    feeds = [
        generate_feed(5_000, seed=100 + k, mix=_BILLING, id_prefix=f"B{k}-")
        for k in range(16 if kind in {"mllp", "all"} else 0)
    ]
    if kind in {"file", "all"}:
        feed = generate_feed(file_messages, seed=7, mix=_BILLING, id_prefix="F")
        temp = drop / "billing.hl7.tmp"
        temp.write_bytes(b"".join(feed))
        temp.rename(drop / "billing.hl7")  # the folder takes only whole files
    sys.stdout.write("flooding\n")  # the probes start now
    sys.stdout.flush()
    threads = []
    if feeds:
        deadline = time.perf_counter() + seconds
        threads = [threading.Thread(target=_send_back_to_back, args=(port, f, deadline, counted)) for f in feeds]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        time.sleep(seconds)
    sys.stdout.write(msgspec.json.encode({"mllp_per_s": counted[0] / seconds}).decode() + "\n")


def _console_flood(port: int, seconds: float) -> None:
    import httpx

    user, password, _pin = _CONSOLE_USER
    base = f"http://127.0.0.1:{port}/console/api"
    clients = [httpx.Client(timeout=30) for _ in range(_CONSOLE_SESSIONS)]
    tokens = []
    for client in clients:  # signed in before the clock starts: each login verifies an argon2 hash
        login = client.post(f"{base}/login", json={"user": user, "password": password, "setting": "operator_console"})
        login.raise_for_status()
        tokens.append(login.json()["csrf"])
    sys.stdout.write("flooding\n")
    sys.stdout.flush()
    polls = [0]
    deadline = time.perf_counter() + seconds

    def poll(client: httpx.Client, csrf: str, offset: float) -> None:
        due = time.perf_counter() + offset
        while due < deadline:
            time.sleep(max(0.0, due - time.perf_counter()))
            answer = client.post(f"{base}/status", json={"passive": True}, headers={"X-Vigil-CSRF": csrf})
            answer.raise_for_status()
            polls[0] += 1
            due += _CONSOLE_POLL_S

    threads = [
        threading.Thread(target=poll, args=(c, t, k * _CONSOLE_POLL_S / _CONSOLE_SESSIONS))
        for k, (c, t) in enumerate(zip(clients, tokens, strict=True))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sys.stdout.write(
        msgspec.json.encode({"mllp_per_s": 0.0, "console_polls_per_s": polls[0] / seconds}).decode() + "\n"
    )


def _history_flood(port: int, seconds: float) -> None:
    """One patient's long history built, then: 16 results for it, 512 other patients' (it is sent away), again."""
    long = [_oru(f"L{i}", "LONG000001", 5) for i in range(_LONG_MESSAGES)]
    done = [0]
    forever = time.perf_counter() + 3600
    builders = [threading.Thread(target=_send_back_to_back, args=(port, long[k::8], forever, done)) for k in range(8)]
    for t in builders:  # built before the clock starts, in parallel
        t.start()
    for t in builders:
        t.join()
    fail_if(done[0] != _LONG_MESSAGES, "the long history was not acknowledged whole")
    others = [_oru(f"O{i}", f"OTHER{i:05d}", 1) for i in range(_ACTIVE_MAX)]
    _send_back_to_back(port, others, forever, [0])  # the long record sent away: its snapshot written
    sys.stdout.write("flooding\n")
    sys.stdout.flush()
    counted, cycles = [0], 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        cycles += 1
        more = [_oru(f"L{cycles}-{i}", "LONG000001", 5) for i in range(16)]  # activated: its snapshot read
        _send_back_to_back(port, more, deadline, counted)
        # Sent away again (its snapshot written); new control ids: a message sent again reaches no actor.
        others = [_oru(f"O{cycles}-{i}", f"OTHER{i:05d}", 1) for i in range(_ACTIVE_MAX)]
        _send_back_to_back(port, others, deadline, counted)
    sys.stdout.write(msgspec.json.encode({"mllp_per_s": counted[0] / seconds, "cycles": cycles}).decode() + "\n")


def _oru(control: str, patient: str, results: int) -> bytes:
    """A routine result message (standard lane) with `results` OBX for `patient`."""
    obx = "".join(f"OBX|{k + 1}|NM|2823-3^K^LN||4.{k}|mmol/L|3.5-5.1|N|||F\r" for k in range(results))
    return (
        f"MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261124101500||ORU^R01^ORU_R01|H{control}|P|2.5.1\r"
        f"PID|1||{patient}^^^GENHOSP^MR||Doe^Jane||19700101|F\r"
        f"OBR|1|P{control}|F{control}|80048^BMP^CPT|||20261124100000\r{obx}"
    ).encode()


def _send_back_to_back(port: int, feed: list[bytes], deadline: float, counted: list[int]) -> None:
    decoder = MLLPDecoder()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        for raw in feed:
            if time.perf_counter() >= deadline:
                return
            conn.sendall(frame(raw))
            while not any(isinstance(i, Frame) for i in decoder.feed(conn.recv(65536))):
                pass
            counted[0] += 1


# -- the probes (this process) --------------------------------------------------------


def _probe(port: int, feed: list[bytes], seconds: float, out: dict[str, Any]) -> None:
    """Send at a steady rate on one connection; the send-to-ACK latency of each, and how many were AA/CA."""
    probe(port, feed, seconds, _PROBE_RATE, out)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


# -- one node, one scenario ----------------------------------------------------------------


def _scenario(
    mode: str, flood: str, scratch: Path, seconds: float, sizes: tuple[int, int], *, probes: bool, extra: str = ""
) -> dict[str, Any]:
    """One fresh node (lanes on, or `fifo`), one flood, the probes if asked; the figures.

    `sizes`: the dropped file's messages, and the NATS backlog's.
    """
    run = scratch / f"{mode}-{flood}-{'probes' if probes else 'solo'}"
    (run / "drop").mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        if flood in {"nats", "all"}:  # the backlog waits in the stream before the node starts
            # The broker stands for another host, as the flood's senders do: at their lower CPU priority.
            url = stack.enter_context(nats_server(run / "nats", nice=10))
            backlog = generate_feed(sizes[1], seed=9, mix=_BILLING, id_prefix="N")
            anyio.run(fill_stream, url, backlog, backend="asyncio")
            extra += f'\n[nats]\nservers = ["{url}"]\n[[nats.subjects]]\nsubject = "hl7.in"\nstream = "HL7_IN"\n'
        return _node_run(mode, flood, run, seconds, sizes[0], probes=probes, extra=extra)


def _stopped(node: subprocess.Popen[bytes], node_log: Path, mode: str, flood: str) -> None:
    """Wait for the node to exit after SIGTERM; one that does not is killed and its last words shown."""
    try:
        node.wait(timeout=120)
        errors = [line for line in node_log.read_text(errors="replace").splitlines() if "error" in line.lower()]
        if errors:  # a part that failed and was restarted: the figures are still the node's, said beside them
            sys.stderr.write("\n".join([f"the node ({mode}, {flood}) logged errors:", *errors[:10], ""]))
    except subprocess.TimeoutExpired:
        node.kill()
        node.wait()
        tail = node_log.read_text(errors="replace").splitlines()[-60:]
        sys.stderr.write("\n".join(["node log, last lines:", *tail, ""]))
        raise RuntimeError(f"the node ({mode}, {flood}) did not stop within 120 s of SIGTERM") from None


def _node_run(
    mode: str, flood: str, run: Path, seconds: float, file_messages: int, *, probes: bool, extra: str
) -> dict[str, Any]:
    drop = run / "drop"
    config = run / "vigil.toml"
    extra += _flood_config(flood, run)
    config.write_text(f'[lanes.scheduler]\nmode = "{mode}"\n[ingest]\nwatch_poll_interval_s = 0.1\n{extra}')
    command = [VIGIL, "--config", str(config), "run", "--mllp", "127.0.0.1:0", "--watch", str(drop)]
    node_log = run / "node.log"  # what the node said: shown if it does not stop
    with (
        node_log.open("wb") as said,
        subprocess.Popen([*command, "--data", str(run / "data")], stdout=subprocess.PIPE, stderr=said) as node,
    ):
        assert node.stdout is not None
        port = int(node.stdout.readline().decode().rsplit(":", 1)[1])
        http_port = port
        while flood == "console" and http_port == port:  # after its other lines ("watching ...")
            line = node.stdout.readline().decode()
            if not line:
                raise RuntimeError("the node stopped before it served HTTP")
            if line.startswith("vigil: HTTP on"):
                http_port = int(line.rsplit(":", 1)[1])
        serving = time.perf_counter()
        for seed, mix in ((3, _CRITICAL), (4, _ROUTINE)):  # warmed up: first actors, first parses, not measured
            _probe(port, generate_feed(20, seed=seed, mix=mix, id_prefix=f"W{seed}"), 20 / _PROBE_RATE, {})
        flooder = None
        if flood != "idle":
            target = http_port if flood == "console" else port
            args = [sys.executable, __file__, _FLOOD, flood, str(target), str(drop), str(seconds), str(file_messages)]
            flooder = subprocess.Popen(args, stdout=subprocess.PIPE, cwd=ROOT)
            assert flooder.stdout is not None
            flooder.stdout.readline()  # its feeds made and its file dropped: the flood begins
            time.sleep(0.3)  # under way before the probes start
        critical: dict[str, Any] = {}
        standard: dict[str, Any] = {}
        started = time.perf_counter()
        threads = []
        if probes:
            count = int(seconds * _PROBE_RATE) + 1
            for feed, out in (
                (generate_feed(count, seed=1, mix=_CRITICAL, id_prefix="K"), critical),
                (generate_feed(count, seed=2, mix=_ROUTINE, id_prefix="R"), standard),
            ):
                threads.append(threading.Thread(target=_probe, args=(port, feed, seconds, out)))
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        flooded: dict[str, Any] = {"mllp_per_s": 0.0}
        if flooder is not None:
            out, _ = flooder.communicate(timeout=seconds + 120)
            flooded = msgspec.json.decode(out.splitlines()[-1])
        elapsed = time.perf_counter() - started
        file_done = (drop / "done" / "billing.hl7").exists()
        served_s = time.perf_counter() - serving
        node.send_signal(signal.SIGTERM)
        _stopped(node, node_log, mode, flood)
        node.stdout.close()
    ids = log_ids(run / "data")
    from_file = sum(1 for i in ids if i.rsplit("|", 1)[-1].startswith("F"))
    from_nats = sum(1 for i in ids if i.rsplit("|", 1)[-1].startswith("N"))
    return {
        "mode": mode,
        "flood": flood,
        "critical": critical,
        "standard": standard,
        "batch_mllp_per_s": flooded["mllp_per_s"],
        "console_polls_per_s": flooded.get("console_polls_per_s", 0.0),
        "batch_file_per_s": from_file / seconds,
        "batch_nats_per_s": from_nats / served_s,  # the backlog drains from the node's start
        "file_done_in_window": file_done,
        "elapsed_s": elapsed,
    }


def _flood_config(flood: str, run: Path) -> str:
    """What a flood adds to the node's configuration (and its data: the console's operator)."""
    if flood == "console":
        _add_console_user(run / "data")
        return '\n[http]\nlisten = "127.0.0.1:0"\nconsole_logins_max = 1000\n'
    if flood == "history":
        return f"\n[actors]\nactive_max = {_ACTIVE_MAX}\n"
    return ""


def _add_console_user(data: Path) -> None:
    """The operator the console's sessions sign in as, put in the node's account store before it starts."""
    from engine.auth import AuthStore, Role, User, hash_secret

    user, password, pin = _CONSOLE_USER
    store = AuthStore.open_private(data)
    try:
        store.put_user(User(user, user, (Role.OPERATOR,), hash_secret(password), hash_secret(pin)))
    finally:
        store.close()


def _row(result: dict[str, Any], idle: dict[str, Any], solo: dict[str, Any] | None) -> dict[str, Any]:
    row: dict[str, Any] = {"mode": result["mode"], "flood": result["flood"]}
    for name in ("critical", "standard"):
        lat, base = result[name].get("latencies", []), idle[name].get("latencies", [])
        row[f"{name}_p50_ms"] = round(_pct(lat, 50), 2)
        row[f"{name}_p99_ms"] = round(_pct(lat, 99), 2)
        row[f"{name}_max_ms"] = round(max(lat), 2) if lat else float("nan")
        row[f"{name}_p99_vs_idle"] = round(_pct(lat, 99) / _pct(base, 99), 2) if base else None
        row[f"{name}_sent"] = len(lat)
        row[f"{name}_accepted"] = result[name].get("accepted", 0)
    row["batch_per_s"] = round(sum(result[f"batch_{k}_per_s"] for k in ("mllp", "file", "nats")))
    solo_rate = sum(solo[f"batch_{k}_per_s"] for k in ("mllp", "file", "nats")) if solo else 0.0
    row["batch_vs_solo"] = round(row["batch_per_s"] / solo_rate, 2) if solo_rate else None
    row["file_done_in_window"] = result["file_done_in_window"]
    row["console_polls_per_s"] = round(result["console_polls_per_s"], 1)
    return row


def main() -> None:
    args = arguments(__doc__ or "", _options)
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    # The file's messages, the NATS backlog's (filling a stream that fsyncs every write takes 3.5 s per 20,000).
    sizes = (
        (args.file_messages, args.backlog_messages)
        if args.file_messages
        else ((4_000, 10_000) if args.quick else (100_000, 100_000))
    )
    scratch = Path(tempfile.mkdtemp(prefix="vigil-bench-isolation-"))
    rows: list[dict[str, Any]] = []
    try:
        for mode in args.modes.split(","):
            idle = _scenario(mode, "idle", scratch, seconds, sizes, probes=True, extra=args.extra)
            rows.append(_row(idle, idle, None))
            # At --quick (CI's smoke run, under its 10 minutes) only the floods all at once, which run every
            # source's path, and the baseline's billing is not run alone.
            for flood in args.floods.split(",") if args.floods else ("all",) if args.quick else _FLOODS:
                skip_solo = args.no_solo or (args.quick and mode == "fifo")
                solo = (
                    None
                    if skip_solo
                    else _scenario(mode, flood, scratch, seconds, sizes, probes=False, extra=args.extra)
                )
                result = _scenario(mode, flood, scratch, seconds, sizes, probes=True, extra=args.extra)
                rows.append(_row(result, idle, solo))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _print(rows)
    fifo = {r["flood"]: r for r in rows if r["mode"] == "fifo"}
    ratios = {
        f"{r['flood']}": round(fifo[r["flood"]]["critical_p99_ms"] / r["critical_p99_ms"], 2)
        for r in rows
        if r["mode"] == "priority" and r["flood"] in fifo
    }
    Console(width=140).print(f"critical p99, lanes off / lanes on, per flood: [bold]{ratios}[/]")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {"title": "isolation", "seconds": seconds, "file_and_backlog_messages": sizes, "results": rows}
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode({**document, "fifo_over_lanes": ratios})))
    fail_if(any(r["critical_sent"] == 0 for r in rows), "a critical probe sent nothing")
    fail_if(any(r["critical_accepted"] != r["critical_sent"] for r in rows), "a critical message was not accepted")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modes", default="priority,fifo", help="lane modes to run, in order (priority,fifo)")
    parser.add_argument("--floods", help=f"floods to run besides idle (default: {','.join(_FLOODS)}; all at --quick)")
    parser.add_argument("--seconds", type=float, help="the measuring window of each scenario")
    parser.add_argument("--file-messages", type=int, help="the dropped file's messages (with --backlog-messages)")
    parser.add_argument("--extra", default="", help="TOML added to each node's configuration (experiments)")
    parser.add_argument("--no-solo", action="store_true", help="do not run each flood alone (no batch ratio)")
    parser.add_argument("--backlog-messages", type=int, default=10_000, help="the NATS backlog's messages")


def _print(rows: list[dict[str, Any]]) -> None:
    table = Table(title="Critical and standard ACK latency under billing floods (ms; ratio to idle)")
    for name in (
        "lanes",
        "flood",
        "critical p50",
        "critical p99",
        "worst",
        "p99 x idle",
        "standard p50",
        "standard p99",
        "p99 x idle",
        "billing/s",
        "x solo",
        "file done",
    ):
        table.add_column(name, justify="left" if name in {"lanes", "flood"} else "right")
    for r in rows:
        table.add_row(
            "on" if r["mode"] == "priority" else "off (fifo)",
            r["flood"],
            f"{r['critical_p50_ms']:.2f}",
            f"{r['critical_p99_ms']:.2f}",
            f"{r['critical_max_ms']:.0f}",
            "-" if r["critical_p99_vs_idle"] is None else f"{r['critical_p99_vs_idle']:.1f}",
            f"{r['standard_p50_ms']:.2f}",
            f"{r['standard_p99_ms']:.2f}",
            "-" if r["standard_p99_vs_idle"] is None else f"{r['standard_p99_vs_idle']:.1f}",
            f"{r['console_polls_per_s']:.0f} polls" if r["flood"] == "console" else f"{r['batch_per_s']:,}",
            "-" if r["batch_vs_solo"] is None else f"{r['batch_vs_solo']:.2f}",
            "yes" if r["file_done_in_window"] else "no",
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == _FLOOD:
        _flood(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]))
    else:
        main()
