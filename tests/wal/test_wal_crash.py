"""Crash tests with a real process: SIGKILL at random moments loses nothing acknowledged.

A child process (tests/harness/wal_child.py) appends with eight concurrent writers and
prints every acknowledged id. The test kills it with SIGKILL at a seeded
random moment, reopens the log, and checks that every acknowledged record is
present, byte-exact, exactly once, and that the whole hash chain verifies.
Runs VIGIL_CRASH_RUNS times (default 24); the seeds are printed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from engine.wal import open_wal, scan_log
from engine.wal.files import OSFiles
from tests.harness.helpers import envelope

ROOT = Path(__file__).resolve().parents[2]
RUNS = int(os.environ.get("VIGIL_CRASH_RUNS", "24"))


def _kill_at_random(directory: Path, run: int, seed: int) -> list[str]:
    """Start the child, let it append for a random while, SIGKILL it; return the acked ids."""
    rng = random.Random(seed)
    with subprocess.Popen(
        [sys.executable, "-m", "tests.harness.wal_child", str(directory), str(run), str(seed)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"READY\n", f"child did not start (seed {seed})"
        time.sleep(rng.uniform(0.01, 0.25))
        proc.send_signal(signal.SIGKILL)
        output = proc.stdout.read()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # Only whole lines: a line cut by the kill was never acknowledged to anyone.
    whole = output.split(b"\n")[:-1]
    return [line[4:].decode() for line in whole if line.startswith(b"ACK ")]


def test_sigkill_never_loses_an_acknowledged_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every acknowledged record survives SIGKILL, byte-exact, once; the chain verifies."""
    base = (
        random.SystemRandom().randrange(1_000_000)
        if "VIGIL_CRASH_SEED" not in os.environ
        else int(os.environ["VIGIL_CRASH_SEED"])
    )
    with capsys.disabled():
        print(f"\ncrash test: {RUNS} SIGKILLs, seeds {base}..{base + RUNS - 1} (VIGIL_CRASH_SEED={base} replays)")
    acked: list[str] = []
    for run in range(RUNS):
        seed = base + run
        acked += _kill_at_random(tmp_path, run, seed)
        _check(tmp_path, acked, seed)
    assert len(acked) > RUNS, "the children acknowledged almost nothing: the test measured nothing"


def _check(directory: Path, acked: list[str], seed: int) -> None:
    async def read() -> dict[str, tuple[int, bytes]]:
        async with open_wal(directory) as wal:
            found: dict[str, tuple[int, bytes]] = {}
            for record in wal.read_from(1):
                assert record.message_id not in found, f"{record.message_id} twice (seed {seed})"
                found[record.message_id] = (record.lsn, record.envelope.raw)
            return found

    found = anyio.run(read)
    for message_id in acked:
        assert message_id in found, f"acknowledged {message_id} lost (seed {seed})"
        i = int(message_id.rsplit("|", 1)[1])
        assert _payload_matches(found[message_id][1], i), f"{message_id} not byte-exact (seed {seed})"
    result = scan_log(directory, OSFiles())
    assert result.tail is None
    assert result.hashed_records == result.records == len(found)


def _payload_matches(raw: bytes, i: int) -> bool:
    head = envelope(i, size=0).raw
    return raw.startswith(head) and raw[len(head) :] == b"x" * (len(raw) - len(head))
