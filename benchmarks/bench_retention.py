"""Retention's cost: how fast sealed segments move to the archive, how small they get, and what a STAT
result's ACK pays while they do.

A log of N billing messages (DFT^P03 over many patients) is made once by
`vigil run --stdin`, in segments of --segment-mb. Then rounds, alternated on
fresh copies of it: a node with `[retention]` (every billing segment due at
once, every patient in them snapshotted first) and the same node without.
Meanwhile a probe in this process sends critical results (ORU^R01, OBX-8 HH)
at 50/s on one MLLP connection and times each ACK. Reported: critical ACK
p50/p99 with and without archiving (and the ratio), the archiving's duration
(the passes' own time, from the node's log, and from the node's start to
the last manifest), its rate in log MB/s and patients snapshotted/s, and the archive's size against the log's.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
from _harness import arguments, fail_if, probe
from rich.console import Console
from rich.table import Table

from engine.core.feedgen import FeedMix, generate_feed

ROOT = Path(__file__).resolve().parents[1]
VIGIL = str(ROOT / "bin" / "vigil")
_RATE = 50.0
_BILLING = FeedMix(0, 0, 0, 0, 0, 0, 1)
_CRITICAL = FeedMix(0, 0, 1, 0, 0, 0, 0)
_RETENTION = '[retention]\narchive = "archive"\nbatch_days = 0.000001\ninterval_s = 0.5\n'


def main() -> None:
    args = arguments(__doc__ or "", _options)
    messages = args.messages or (4_000 if args.quick else 150_000)
    patients = args.patients or (500 if args.quick else 20_000)
    segment_mb = args.segment_mb or (1 if args.quick else 16)
    seconds = args.seconds or (3.0 if args.quick else 20.0)
    rounds = args.rounds or (1 if args.quick else 2)
    scratch = Path(tempfile.mkdtemp(prefix="vigil-bench-retention-"))
    try:
        base = scratch / "base"
        wal = f"[wal]\nsegment_bytes_max = {segment_mb * 1024 * 1024}\n"
        _make_log(base, generate_feed(messages, seed=5, mix=_BILLING, patients=patients, id_prefix="B"), wal)
        sealed = len(list((base / "data" / "wal").glob("*.seg"))) - 1
        log_bytes = sum(p.stat().st_size for p in sorted((base / "data" / "wal").glob("*.seg"))[:-1])
        runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
        for n in range(rounds):
            for name, extra in (("without", ""), ("with", _RETENTION)):
                run = scratch / f"{name}-{n}"
                shutil.copytree(base, run, ignore=shutil.ignore_patterns("admin.sock"))
                runs[name].append(_serve(run, wal + extra, seconds, sealed))
                shutil.rmtree(run)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    best = {name: min(rs, key=lambda r: r["p99_ms"]) for name, rs in runs.items()}
    archived = min((r for r in runs["with"]), key=lambda r: r["archive_s"])
    result = {
        "messages": messages,
        "patients": patients,
        "segment_mb": segment_mb,
        "sealed_segments": sealed,
        "log_mb": round(log_bytes / 1e6, 1),
        "archive_mb": round(archived["archive_bytes"] / 1e6, 1),
        "archive_s": round(archived["archive_s"], 2),
        "log_mb_per_s": round(log_bytes / 1e6 / archived["archive_s"], 1),
        "until_archived_s": round(archived["until_archived_s"], 2),
        "patients_per_s": round(archived["patients"] / archived["archive_s"]),
        "critical": {name: {k: round(r[k], 2) for k in ("p50_ms", "p99_ms")} for name, r in best.items()},
        "p99_with_over_without": round(best["with"]["p99_ms"] / best["without"]["p99_ms"], 2),
    }
    _print(result)
    if args.json:
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(result)))
    fail_if(archived["archived"] < sealed, f"only {archived['archived']} of {sealed} segments archived")
    fail_if(any(r["accepted"] != r["sent"] for rs in runs.values() for r in rs), "a critical message was not AA")


def _make_log(run: Path, feed: list[bytes], wal: str) -> None:
    config = run / "vigil.toml"
    run.mkdir(parents=True)
    config.write_text(wal)
    command = [VIGIL, "--config", str(config), "run", "--stdin", "--data", str(run / "data")]
    subprocess.run(
        command, input=b"".join(feed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, check=True
    )


def _serve(run: Path, config_text: str, seconds: float, sealed: int) -> dict[str, Any]:
    """A node on `run`'s copy of the log; the probe for `seconds`; when the archive was done, if it was."""
    config = run / "vigil.toml"
    config.write_text(config_text)
    command = [VIGIL, "--config", str(config), "run", "--mllp", "127.0.0.1:0", "--data", str(run / "data")]
    said = run / "node.log"
    with said.open("wb") as log, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, cwd=ROOT) as node:
        assert node.stdout is not None
        started = time.perf_counter()
        port = int(node.stdout.readline().decode().rsplit(":", 1)[1])
        probed: dict[str, Any] = {}
        probe = threading.Thread(target=_probe, args=(port, seconds, probed))
        probe.start()
        archive = run / "data" / "archive"
        done_at = None
        while probe.is_alive():
            if done_at is None and len(list(archive.glob("*.json"))) >= sealed > 0:
                done_at = time.perf_counter()
            time.sleep(0.02)
        probe.join()
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=120)
        node.stdout.close()
    latencies = sorted(probed["latencies"])
    manifests = list(archive.glob("*.json"))
    passes = [line for line in said.read_text().splitlines() if '"retention.pass"' in line]
    archiving = [msgspec.json.decode(line) for line in passes]
    return {
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
        "sent": len(latencies),
        "accepted": probed["accepted"],
        "archived": len(manifests),
        "until_archived_s": (done_at - started) if done_at is not None else float("inf"),
        "archive_s": sum(p["seconds"] for p in archiving) or float("inf"),  # the passes' own time
        "archive_bytes": sum(p.stat().st_size for p in archive.glob("*.gz")),
        "patients": sum(p["snapshots_asked"] for p in archiving),
    }


def _probe(port: int, seconds: float, out: dict[str, Any]) -> None:
    probe(port, generate_feed(int(seconds * _RATE) + 1, seed=1, mix=_CRITICAL, id_prefix="K"), seconds, _RATE, out)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", type=int, help="billing messages in the log")
    parser.add_argument("--patients", type=int, help="patients they are about")
    parser.add_argument("--segment-mb", type=int, help="the log's segment size")
    parser.add_argument("--seconds", type=float, help="each node's probing window (archiving must end within it)")


def _print(r: dict[str, Any]) -> None:
    table = Table(title="Retention: a node archiving its billing segments, against the same node not archiving")
    for name in ("node", "critical ACK p50 ms", "p99 ms"):
        table.add_column(name, justify="left" if name == "node" else "right")
    for name in ("without", "with"):
        table.add_row(
            f"{name} retention", f"{r['critical'][name]['p50_ms']:.2f}", f"{r['critical'][name]['p99_ms']:.2f}"
        )
    console = Console(width=140)
    console.print(table)
    console.print(
        f"{r['sealed_segments']} segments ({r['log_mb']} MB of log, {r['messages']:,} messages, "
        f"{r['patients']:,} patients) archived in {r['archive_s']} s of passes ({r['until_archived_s']} s "
        f"from the node's start): {r['log_mb_per_s']} MB/s, "
        f"{r['patients_per_s']:,} patients snapshotted/s; archive {r['archive_mb']} MB; "
        f"critical p99 with/without {r['p99_with_over_without']}x"
    )


if __name__ == "__main__":
    main()
