"""Progress of long log scans: the callback counts every byte, and `vigil wal verify` draws a bar on a terminal only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from engine.wal import open_wal, scan_log
from engine.wal.files import OSFiles
from tests.harness.helpers import SMALL, envelope
from tests.harness.node_process import ROOT, VIGIL


async def _log_of_many_segments(directory: Path) -> None:
    async with open_wal(directory, SMALL) as wal:
        for i in range(0, 200, 10):  # groups: a segment rolls between them
            await wal.append([envelope(j, size=2000) for j in range(i, i + 10)])


def _segment_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.seg"))


def test_scan_progress_reaches_every_byte_in_order(tmp_path: Path) -> None:
    """One call per segment; bytes done never go back; the last call says all of them."""
    directory = tmp_path / "wal"
    anyio.run(_log_of_many_segments, directory)
    calls: list[tuple[int, int]] = []
    scan_log(directory, OSFiles(), progress=lambda done, total: calls.append((done, total)))
    total = _segment_bytes(directory)
    assert len(calls) == len(list(directory.glob("*.seg"))) > 3
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert calls[-1] == (total, total)


def test_recovery_reports_progress_through_open_wal(tmp_path: Path) -> None:
    """The node's recovery (open_wal) passes the callback on: the bar of `vigil run` has something to draw."""
    directory = tmp_path / "wal"
    anyio.run(_log_of_many_segments, directory)
    calls: list[tuple[int, int]] = []

    async def reopen() -> None:
        async with open_wal(directory, SMALL, progress=lambda d, t: calls.append((d, t))):
            pass

    anyio.run(reopen)
    assert calls
    assert calls[-1][0] == calls[-1][1]


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal")
def test_wal_verify_draws_a_bar_on_a_terminal_and_not_in_a_pipe(tmp_path: Path) -> None:
    """Same command: with stderr a terminal the bar appears; piped, stderr stays clean for machines."""
    data = tmp_path / "data"
    anyio.run(_log_of_many_segments, data / "wal")
    command = [VIGIL, "wal", "verify", "--data", str(data)]
    primary, secondary = os.openpty()
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=secondary, cwd=ROOT, timeout=60, check=False)
        os.close(secondary)
        drawn = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(primary)
    assert done.returncode == 0
    assert b"verifying" in drawn
    piped = subprocess.run(command, capture_output=True, cwd=ROOT, timeout=60, check=False)
    assert piped.returncode == 0
    assert b"verifying" not in piped.stderr
