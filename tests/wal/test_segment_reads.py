"""Reading records opens no file: segments are read through descriptors kept open, safely across threads."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from engine.wal import open_wal
from engine.wal.files import OSFiles
from engine.wal.segment_reads import SegmentReads
from tests.harness.helpers import SMALL, envelope

pytestmark = pytest.mark.anyio


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_reading_a_patients_records_opens_each_segment_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_wal(tmp_path, SMALL) as wal:
        for start in range(0, 700, 50):
            await wal.append([envelope(i, patient="H|P1", size=1500) for i in range(start, start + 50)])
        segments = wal.statistics().segments
        assert segments > 5  # the patient's records span many segments
        opened: list[str] = []
        real_os_open, real_path_open = os.open, Path.open

        def os_open(path: object, *args: object, **kwargs: object) -> int:
            if str(path).endswith(".seg"):  # not the writer's own (its directory, its checkpoints)
                opened.append(str(path))
            return real_os_open(path, *args, **kwargs)  # type: ignore[arg-type]

        def path_open(self: Path, *args: object, **kwargs: object) -> object:
            if self.suffix == ".seg":
                opened.append(str(self))
            return real_path_open(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(Path, "open", path_open)
        for _ in range(3):
            assert [r.lsn for r in wal.read_patient("H|P1")] == list(range(1, 701))
        monkeypatch.undo()
    # Each segment once, the first time: not twice per record, each time (4,200 opens before).
    assert len(opened) <= segments, sorted(p.rsplit("/", 1)[1] for p in opened)


def test_descriptors_are_shared_by_threads_evicted_when_idle_and_all_closed(tmp_path: Path) -> None:
    files = []
    for n in range(6):
        path = tmp_path / f"s{n}"
        path.write_bytes(bytes([n]) * 10_000)
        files.append(path)
    before = _open_fds()
    reads = SegmentReads(OSFiles(), keep=2)
    wrong: list[str] = []

    def reader(seed: int) -> None:
        for i in range(2_000):
            n = (seed + i) % len(files)
            data = reads.read(files[n], i % 9_000, 100)
            if data != bytes([n]) * 100:
                wrong.append(f"{n}@{i}")

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    assert _open_fds() <= before + 2 + 4  # at most `keep`, and those still being read when evicted
    assert reads.read(files[0], 9_990) == bytes([0]) * 10  # to the end
    reads.forget(files[0])
    reads.close()
    assert _open_fds() == before
