"""One contract, two file layers: the real one (`OSFiles`) and the tests' fault-injecting twin (`FaultyFiles`).

The log's fault tests run on the twin; they prove something about the real
log only while the twin behaves as the real layer does when no fault is
armed. Every test here runs on both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.wal import FileLayer, OSFiles
from engine.wal.files import write_atomic
from tests.harness.faultfs import FaultyFiles


@pytest.fixture(params=["os", "faulty"])
def files(request: pytest.FixtureRequest) -> FileLayer:
    return OSFiles() if request.param == "os" else FaultyFiles()


def _write(files: FileLayer, path: Path, *chunks: bytes) -> None:
    handle = files.open_append(path)
    try:
        for chunk in chunks:
            files.write(handle, chunk)
        files.sync(handle)
    finally:
        files.close(handle)


def test_what_is_written_and_synced_reads_back_whole(files: FileLayer, tmp_path: Path) -> None:
    path = tmp_path / "segment"
    _write(files, path, b"abc", b"", b"defgh")
    assert files.read(path) == b"abcdefgh"
    assert files.size(path) == 8


def test_opening_again_appends_at_the_end(files: FileLayer, tmp_path: Path) -> None:
    path = tmp_path / "segment"
    _write(files, path, b"first ")
    _write(files, path, b"second")
    assert files.read(path) == b"first second"


def test_a_read_takes_an_offset_and_a_size(files: FileLayer, tmp_path: Path) -> None:
    path = tmp_path / "segment"
    _write(files, path, bytes(range(100)))
    assert files.read(path, 10, 5) == bytes(range(10, 15))
    assert files.read(path, 95) == bytes(range(95, 100))
    assert files.read(path, 200) == b""  # past the end: nothing, not an error


def test_truncate_cuts_the_tail(files: FileLayer, tmp_path: Path) -> None:
    path = tmp_path / "segment"
    handle = files.open_append(path)
    try:
        files.write(handle, b"keep-this|torn tail")
        files.truncate(handle, 9)
        files.sync(handle)
    finally:
        files.close(handle)
    assert files.read(path) == b"keep-this"


def test_list_makes_the_directory_and_sorts_names(files: FileLayer, tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    assert files.list(directory) == []
    for name in ("b", "a", "c"):
        _write(files, directory / name, b"x")
    assert files.list(directory) == ["a", "b", "c"]


def test_replace_and_remove(files: FileLayer, tmp_path: Path) -> None:
    source, target = tmp_path / "new", tmp_path / "current"
    _write(files, target, b"old")
    _write(files, source, b"new")
    files.replace(source, target)
    files.sync_dir(tmp_path)
    assert files.read(target) == b"new"
    assert files.list(tmp_path) == ["current"]
    files.remove(target)
    files.remove(target)  # already gone: not an error
    assert files.list(tmp_path) == []


def test_write_atomic_replaces_a_file_whole(files: FileLayer, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint"
    write_atomic(files, path, b"one")
    write_atomic(files, path, b"two, longer")
    assert files.read(path) == b"two, longer"
    assert files.list(tmp_path) == ["checkpoint"]  # no temp file left behind
