"""The whole history: the archived records, then the log's, as one run of records in LSN order.

What reaches back past retention (a privacy officer's access trail, a
message's content or a patient's messages in `vigil log`) reads through
this: each archived segment is checked against its manifest's SHA-256 as it
is read, and the log goes on from the first LSN it keeps, so no record is
read twice or missed at the seam.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, overload

from engine.retention.archive import ArchiveFolder
from engine.wal import LogRecord, OSFiles, decode_record, iter_records, records_in

__all__ = ["archived", "whole_history"]

_Decoded = TypeVar("_Decoded")


@overload
def whole_history(
    archive: ArchiveFolder | None, wal_dir: Path, *, from_lsn: int = 1, patient: str | None = None
) -> Iterator[LogRecord]: ...


@overload
def whole_history(
    archive: ArchiveFolder | None,
    wal_dir: Path,
    *,
    from_lsn: int = 1,
    patient: str | None = None,
    decode: Callable[[bytes], _Decoded],
) -> Iterator[_Decoded]: ...


def whole_history(
    archive: ArchiveFolder | None,
    wal_dir: Path,
    *,
    from_lsn: int = 1,
    patient: str | None = None,
    decode: Callable[[bytes], Any] = decode_record,
) -> Iterator[Any]:
    """The archived records from `from_lsn` on, then the log's from where the archive ends; `decode`d.

    Without an archive, the log's alone (as `iter_records`).

    Raises:
        ArchiveError: an archived segment is missing or not what its manifest says.
    """
    ended = archive.last() if archive is not None else None
    if archive is not None:
        yield from archived(archive, from_lsn=from_lsn, patient=patient, decode=decode)
    after = ended.last_lsn if ended is not None else 0
    yield from iter_records(wal_dir, OSFiles(), from_lsn=max(from_lsn, after + 1), patient=patient, decode=decode)


def archived(
    archive: ArchiveFolder,
    *,
    from_lsn: int = 1,
    patient: str | None = None,
    decode: Callable[[bytes], Any] = decode_record,
) -> Iterator[Any]:
    """The archive's records alone, from `from_lsn` on (touching `patient`, if given), `decode`d.

    Raises:
        ArchiveError: an archived segment is missing or not what its manifest says.
    """
    for entry in archive.entries():
        if entry.last_lsn >= from_lsn:
            yield from records_in(archive.read(entry), from_lsn=from_lsn, patient=patient, decode=decode)
