"""Reading a log without opening it for writing: for `vigil wal dump` beside a running node.

No lock is taken and nothing is repaired: the reader stops at the first frame
that is not whole and valid (a record being written, or a torn tail).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar, overload

from engine.wal.files import FileLayer
from engine.wal.record import SEGMENT_MAGIC, LogRecord, decode_head, decode_record, read_frame
from engine.wal.scan import SEGMENT_SUFFIX

__all__ = ["iter_records", "records_in"]

_Decoded = TypeVar("_Decoded")


@overload
def iter_records(
    directory: Path, files: FileLayer, *, from_lsn: int = 1, patient: str | None = None
) -> Iterator[LogRecord]: ...


@overload
def iter_records(
    directory: Path,
    files: FileLayer,
    *,
    from_lsn: int = 1,
    patient: str | None = None,
    decode: Callable[[bytes], _Decoded],
) -> Iterator[_Decoded]: ...


def iter_records(
    directory: Path,
    files: FileLayer,
    *,
    from_lsn: int = 1,
    patient: str | None = None,
    decode: Callable[[bytes], Any] = decode_record,
) -> Iterator[Any]:
    """Records from `from_lsn` on (touching `patient`, if given), in log order, each `decode`d from its body."""
    names = [n for n in files.list(directory) if n.endswith(SEGMENT_SUFFIX)]
    firsts = [int(n.removesuffix(SEGMENT_SUFFIX)) for n in names]
    for i, name in enumerate(names):
        if i + 1 < len(names) and firsts[i + 1] <= from_lsn:
            continue  # every record of this segment is before from_lsn
        data = files.read(directory / name)
        whole = yield from records_in(data, from_lsn=from_lsn, patient=patient, decode=decode)
        if not whole:
            return


def records_in(
    data: bytes, *, from_lsn: int = 1, patient: str | None = None, decode: Callable[[bytes], Any] = decode_record
) -> Generator[Any, None, bool]:
    """A segment's records (its bytes in memory) from `from_lsn` on, touching `patient` if given, `decode`d.

    Returns whether the segment was whole: False when it stopped at a frame
    that is not whole and valid (a record being written, a torn tail).
    """
    if not data.startswith(SEGMENT_MAGIC):
        return False
    pos = len(SEGMENT_MAGIC)
    while (frame := read_frame(data, pos)) is not None and frame.crc_ok:
        pos = frame.end
        head = decode_head(frame.body)
        if head.lsn < from_lsn or (patient is not None and patient not in head.patients):
            continue
        yield decode(frame.body)
    return pos == len(data)
