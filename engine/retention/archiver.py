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

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Protocol, final

import anyio
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
        keep_snapshot: Callable[[str], Awaitable[int]],
        now: Callable[[], datetime] = wall_now,
    ) -> None:
        self._config = config
        self._archive = archive
        self._log = log
        self._readers = readers
        self._snapshot_lsns = snapshot_lsns
        self._keep_snapshot = keep_snapshot
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
        """One pass: archive and release what may go now; how many segments went."""
        done, started, self._snapshotted = 0, anyio.current_time(), 0
        for segment in self._log().sealed_segments()[: self._config.segments_per_pass_max]:
            why = await self._archive_one(segment)
            if why is not None:
                self._keep(f"{segment.path.name}: {why}")
                break
            done += 1
        else:
            self._keep("no sealed segment is left to judge")
        if done:
            seconds = round(anyio.current_time() - started, 3)
            _log.info("retention.pass", segments=done, snapshots_asked=self._snapshotted, seconds=seconds)
        return done

    async def _archive_one(self, segment: SegmentFile) -> str | None:
        """Archive and release one segment; why it stays, when it does."""
        why = held_by_reader(_range_only(segment), self._readers())
        if why is not None:
            return why  # judged before reading a byte: the usual reason, and free to know
        summary = await anyio.to_thread.run_sync(self._summarise, segment)
        why = kept_by_age(summary, self._config, self._now()) or held_by_reader(summary, self._readers())
        if why is not None:
            return why
        missing = await self._snapshots_missing(summary)
        if missing:
            return f"{len(missing)} patient(s) in it have no snapshot past it yet (their records are still applied)"
        entry = await anyio.to_thread.run_sync(self._archive.put, _read(segment), summary, utc_now())
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

    def _summarise(self, segment: SegmentFile) -> SegmentSummary:
        last = self._last
        if last is not None and last.last_lsn + 1 == segment.first_lsn:
            anchor: bytes | None = bytes.fromhex(last.last_hash)
        else:
            anchor = GENESIS_HASH if segment.first_lsn == 1 else None
        return summarise_segment(_read(segment), segment.first_lsn, anchor)

    async def _snapshots_missing(self, summary: SegmentSummary) -> list[str]:
        """The patients still without a snapshot past the segment, after asking their actors for one."""
        have = await anyio.to_thread.run_sync(self._snapshot_lsns, list(summary.patients))
        missing = snapshots_missing(summary, have)
        # A few at a time: each is an activation (a read of the log) and a write, mostly waiting on a thread.
        for start in range(0, len(missing), _SNAPSHOTS_AT_ONCE):
            chunk = missing[start : start + _SNAPSHOTS_AT_ONCE]
            async with anyio.create_task_group() as tg:
                for patient in chunk:
                    tg.start_soon(self._snapshot_one, patient, have)
            if any(have.get(p, 0) < summary.patients[p] for p in chunk):
                break  # one failed: the segment stays, the next look asks again
        return snapshots_missing(summary, have)

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


def _read(segment: SegmentFile) -> bytes:
    """A sealed segment's valid bytes (sealed: never written again)."""
    with segment.path.open("rb") as f:
        return f.read(segment.size)


def _range_only(segment: SegmentFile) -> SegmentSummary:
    return SegmentSummary(segment.first_lsn, segment.last_lsn, b"", b"", "", {}, {})
