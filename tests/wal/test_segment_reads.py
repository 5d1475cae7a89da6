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


def _maps(path: Path) -> int:
    """How many of this process's memory maps are of `path`."""
    return sum(line.rstrip().endswith(str(path)) for line in Path("/proc/self/maps").read_text().splitlines())


def test_durable_bytes_are_read_through_a_map_and_the_rest_as_before(tmp_path: Path) -> None:
    path = tmp_path / "s0"
    path.write_bytes(bytes(range(256)) * 64)  # 16 KiB, durable so far
    reads = SegmentReads(OSFiles(), remap_bytes=4096)
    assert reads.read(path, 100, 50) == (bytes(range(256)) * 64)[100:150]
    assert _maps(path) == 0  # nothing said durable: nothing mapped
    assert reads.read(path, 100, 50, durable=16384) == (bytes(range(256)) * 64)[100:150]
    assert _maps(path) == 1
    with path.open("ab") as f:
        f.write(b"\xff" * 8192)  # written since: past the map, read as before
    assert reads.read(path, 16380, 8, durable=16384) == bytes(range(252, 256)) + b"\xff" * 4
    assert reads.read(path, 20000, 10, durable=24576) == b"\xff" * 10  # grown by remap_bytes: mapped again
    assert _maps(path) == 1
    assert reads.read(path, 24570, 100, durable=24576) == b"\xff" * 6  # fewer only at the end of the file
    reads.forget(path)
    assert _maps(path) == 0
    reads.close()


def test_a_mapped_segment_is_read_alike_by_threads_while_it_grows(tmp_path: Path) -> None:
    """Readers in threads over a segment being appended to, each told what is durable: never a wrong byte."""
    path = tmp_path / "s0"
    path.write_bytes(b"")
    reads = SegmentReads(OSFiles(), remap_bytes=4096)
    durable = 0
    wrong: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            end = durable
            wrong.extend(
                offset
                for offset in range(0, end - 64, 997)
                if reads.read(path, offset, 64, durable=end) != bytes((offset + k) % 251 for k in range(64))
            )

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    with path.open("ab") as f:
        for start in range(0, 400_000, 4_000):
            f.write(bytes((start + k) % 251 for k in range(4_000)))
            f.flush()
            durable = start + 4_000
    stop.set()
    for t in threads:
        t.join()
    reads.close()
    assert wrong == []
    assert _maps(path) == 0
