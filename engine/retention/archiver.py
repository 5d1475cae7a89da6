"""The node's archiver: every interval, the sealed segments retention lets go move to the archive.

Oldest first, one segment at a time, and the pass stops at the first one
that must stay (the log stays one run from its base), saying why in
`status` and a log line when the reason changes. For each segment: its bytes
are read and checked (CRCs, LSNs, the chain onto the archive's last
segment), its lanes' periods and every reader's position are judged, every
patient in it gets a snapshot past it (asked of its actor when missing),
then it is archived (fsync'd) and only then released from the log (the
log's base, written first, keeps the chain's anchor).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Protocol, final

import anyio
import anyio.lowlevel
import anyio.to_process
import msgspec
import structlog
from anyio.abc import TaskStatus

from engine.infra.clock import utc_now, wall_now
from engine.infra.config import RetentionConfig
from engine.retention.archive import ArchivedSegment, ArchiveFolder
from engine.retention.policy import held_by_reader, kept_by_age, snapshots_missing
from engine.retention.segment_summary import SegmentSummary, summarise_segment
from engine.wal import GENESIS_HASH, SegmentFile

__all__ = ["Archiver", "RetentionStatus"]

_log = structlog.get_logger("vigil.retention")
_SNAPSHOTS_AT_ONCE = 32
_BULK_PATIENTS = 32  # per thread call: about 5 ms, then the lanes' pacing lets urgent messages go first


class Log(Protocol):
    """What the archiver needs of the write-ahead log."""

    @property
    def first_lsn(self) -> int: ...

    def sealed_segments(self) -> list[SegmentFile]: ...

    async def release_segments_before(self, lsn: int) -> int: ...


@final
class RetentionStatus(msgspec.Struct, frozen=True):
    """For `vigil status`: what the archive holds, where the log begins, and what keeps the next segment."""

    archive: str
    archived_segments: int
    archived_through_lsn: int
    log_first_lsn: int
    kept_because: str


@final
class Archiver:
    """Moves the segments retention lets go to the archive; run it as a supervised child."""

    def __init__(
        self,
        config: RetentionConfig,
        archive: ArchiveFolder,
        *,
        log: Callable[[], Log],
        readers: Callable[[], Mapping[str, int]],
        snapshot_lsns: Callable[[list[str]], dict[str, int]],
        snapshot_many: Callable[[list[str]], dict[str, int]],
        keep_snapshot: Callable[[str], Awaitable[int]],
        pace: Callable[[], Awaitable[None]] = anyio.lowlevel.checkpoint,
        now: Callable[[], datetime] = wall_now,
    ) -> None:
        self._config = config
        self._archive = archive
        self._log = log
        self._readers = readers
        self._snapshot_lsns = snapshot_lsns
        self._snapshot_many = snapshot_many
        self._keep_snapshot = keep_snapshot
        self._pace = pace
        self._now = now
        self._kept_because = "not looked yet"
        self._last: ArchivedSegment | None = None
        self._count = 0
        self._snapshotted = 0  # snapshots asked of actors in the current pass

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        entries = await anyio.to_thread.run_sync(self._archive.entries)
        self._count, self._last = len(entries), entries[-1] if entries else None
        task_status.started()
        while True:
            await self.archive_due()
            await anyio.sleep(self._config.interval_s)

    def status(self) -> RetentionStatus:
        return RetentionStatus(
            str(self._archive.path),
            self._count,
            self._last.last_lsn if self._last else 0,
            self._log().first_lsn,
            self._kept_because,
        )

    async def archive_due(self) -> int:
        """One pass: archive and release what may go now; how many segments went.

        The run of segments that may go is judged first (age, readers), then
        every patient in the run gets a snapshot past it, each asked once for
        the whole run (a log archived for the first time holds most patients in
        every segment), then the segments go, oldest first.
        """
        started, self._snapshotted = anyio.current_time(), 0
        due, why = await self._due_run()
        have = await self._snapshots_for(due)
        done = 0
        for segment, summary in due:
            gap = snapshots_missing(summary, have)
            kept = _no_snapshot(gap) if gap else await self._move(segment, summary)
            if kept is not None:
                why = f"{segment.path.name}: {kept}"
                break
            done += 1
        self._keep(why or "no sealed segment is left to judge")
        if done:
            seconds = round(anyio.current_time() - started, 3)
            _log.info("retention.pass", segments=done, snapshots_asked=self._snapshotted, seconds=seconds)
        return done

    async def _due_run(self) -> tuple[list[tuple[SegmentFile, SegmentSummary]], str | None]:
        """The sealed segments, oldest first, that age and readers let go; why the next one stays (None: none left)."""
        due: list[tuple[SegmentFile, SegmentSummary]] = []
        for segment in self._log().sealed_segments()[: self._config.segments_per_pass_max]:
            why = held_by_reader(_range_only(segment), self._readers())
            if why is None:  # judged before reading a byte: the usual reason, and free to know
                anchor = due[-1][1].last_hash if due else self._anchor(segment)
                summary = await anyio.to_process.run_sync(_summarise, segment, anchor)
                why = kept_by_age(summary, self._config, self._now()) or held_by_reader(summary, self._readers())
            if why is not None:
                return due, f"{segment.path.name}: {why}"
            due.append((segment, summary))
        return due, None

    async def _move(self, segment: SegmentFile, summary: SegmentSummary) -> str | None:
        """Archive one segment and release it from the log; why it stays, when it does."""
        entry = await anyio.to_process.run_sync(_put, self._archive.path, segment, summary, utc_now())
        if await self._log().release_segments_before(segment.last_lsn + 1) == 0:
            return "a copy of the log (vigil backup) is being taken: it goes at the next look"
        if self._last is None or entry.first_lsn > self._last.last_lsn:  # else archived again after a crash
            self._count += 1
        self._last = entry
        _log.info(
            "retention.archived",
            segment=entry.segment,
            first_lsn=entry.first_lsn,
            last_lsn=entry.last_lsn,
            newest=entry.newest,
        )
        return None

    def _anchor(self, segment: SegmentFile) -> bytes | None:
        """The chain hash the segment's first record must link to, where it is known."""
        last = self._last
        if last is not None and last.last_lsn + 1 == segment.first_lsn:
            return bytes.fromhex(last.last_hash)
        return GENESIS_HASH if segment.first_lsn == 1 else None

    async def _snapshots_for(self, due: list[tuple[SegmentFile, SegmentSummary]]) -> dict[str, int]:
        """Each patient of the run's snapshot LSN, after asking the actors of those whose snapshot is behind."""
        needed: dict[str, int] = {}
        for _segment, summary in due:
            needed.update(summary.patients)  # later segments last: each patient's last LSN in the run
        have = await anyio.to_thread.run_sync(self._snapshot_lsns, list(needed))
        missing = [p for p, lsn in needed.items() if have.get(p, 0) < lsn]
        # Most in bulk (a slice of patients folded and saved in one thread call, one transaction) ...
        for start in range(0, len(missing), _BULK_PATIENTS):
            await self._pace()  # batch work: an urgent message in flight goes first
            have.update(await anyio.to_thread.run_sync(self._snapshot_many, missing[start : start + _BULK_PATIENTS]))
            self._snapshotted += len(missing[start : start + _BULK_PATIENTS])
        # ... the rest (a merge into them in their tail, a poison record) by their actors, a few at a time.
        missing = [p for p in missing if have.get(p, 0) < needed[p]]
        for start in range(0, len(missing), _SNAPSHOTS_AT_ONCE):
            chunk = missing[start : start + _SNAPSHOTS_AT_ONCE]
            async with anyio.create_task_group() as tg:
                for patient in chunk:
                    tg.start_soon(self._snapshot_one, patient, have)
            if any(have.get(p, 0) < needed[p] for p in chunk):
                break  # one failed: the segments from its stay, the next look asks again
        return have

    async def _snapshot_one(self, patient: str, have: dict[str, int]) -> None:
        self._snapshotted += 1
        try:
            have[patient] = await self._keep_snapshot(patient)
        except Exception as exc:  # noqa: BLE001 -- the segment stays; the next look asks again
            _log.warning("retention.snapshot_failed", error=type(exc).__name__)

    def _keep(self, why: str) -> None:
        if why != self._kept_because:
            _log.info("retention.kept", reason=why)
        self._kept_because = why


# Reading, checking and compressing a segment run in a worker process at a lower priority: in the node's
# process they held the interpreter for seconds per pass, and a critical result's ACK waited on it.


def _summarise(segment: SegmentFile, anchor: bytes | None) -> SegmentSummary:
    _below_the_node()
    return summarise_segment(_read(segment), segment.first_lsn, anchor)


def _put(folder: Path, segment: SegmentFile, summary: SegmentSummary, at: str) -> ArchivedSegment:
    _below_the_node()
    return ArchiveFolder(folder).put(_read(segment), summary, at)


_NICE = 10
_niced = False


def _below_the_node() -> None:
    """Once per worker process: below the node, so the CPU goes to the loop that answers critical traffic."""
    global _niced  # noqa: PLW0603 -- once per process, and a worker runs one call at a time
    if not _niced:
        os.nice(_NICE)
        _niced = True


def _no_snapshot(patients: list[str]) -> str:
    return f"{len(patients)} patient(s) in it have no snapshot past it yet (their records are still applied)"


def _read(segment: SegmentFile) -> bytes:
    """A sealed segment's valid bytes (sealed: never written again)."""
    with segment.path.open("rb") as f:
        return f.read(segment.size)


def _range_only(segment: SegmentFile) -> SegmentSummary:
    return SegmentSummary(segment.first_lsn, segment.last_lsn, b"", b"", "", {}, {})
