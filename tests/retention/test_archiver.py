"""The archiver over a real log, snapshot store and patient actors: what may go goes, what must stay stays,
and every patient's record is rebuilt the same from its snapshot and what the log keeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import msgspec
import pytest

from actors import PatientActors, PatientRecord
from engine.core.model import Lane, PatientMerged
from engine.infra.clock import wall_now
from engine.infra.config import RetentionConfig
from engine.node.record_source import LogRecordSource, PoisonQuarantine
from engine.retention import ArchiveError, ArchiveFolder, Archiver, whole_history
from engine.wal import (
    BaseStore,
    OSFiles,
    PackedSnapshotStore,
    Quarantine,
    WriteAheadLog,
    decode_events,
    open_wal,
    scan_log,
)
from tests.harness.helpers import SMALL, envelope

pytestmark = pytest.mark.anyio

_PATIENTS = 7  # envelope(i) is for patient H|P{i % 7}
_LATER = timedelta(days=2)  # the archiver's clock, past a batch period of a day


def _config(tmp_path: Path, **days: float) -> RetentionConfig:
    return RetentionConfig(archive=str(tmp_path / "archive"), **days)


async def _fill(wal: WriteAheadLog, batch_before: int, batch_after: int) -> int:
    """Billing records, one standard record, more billing; the standard record's LSN."""
    for i in range(batch_before):
        await wal.append([envelope(i, Lane.BATCH, size=1000)])
    [standard] = await wal.append([envelope(10_000, Lane.STANDARD, patient="H|P0")])
    for i in range(batch_after):
        await wal.append([envelope(20_000 + i, Lane.BATCH, size=1000)])
    return standard.lsn


def _rebuilt(wal: WriteAheadLog, snapshots: PackedSnapshotStore) -> dict[str, PatientRecord]:
    """Each patient's record as an activation builds it: its snapshot, then the log's tail after it."""
    out = {}
    for n in range(_PATIENTS):
        patient = f"H|P{n}"
        snapshot, tail = LogRecordSource(wal, snapshots)._load(patient)
        record = snapshot if snapshot is not None else PatientRecord.empty(patient)
        out[patient] = record.extend((a.lsn, a.recorded_at, a.message_id, a.events) for a in tail)
    return out


def _actors(wal: WriteAheadLog, snapshots: PackedSnapshotStore) -> PatientActors:
    quarantine = PoisonQuarantine(wal, Quarantine(wal.directory.parent / "quarantine", OSFiles()))
    # Passivation never snapshots here: every snapshot is one asked for.
    return PatientActors(LogRecordSource(wal, snapshots), quarantine, snapshot_min_records=10**9)


@asynccontextmanager
async def _archiver(
    tmp_path: Path,
    wal: WriteAheadLog,
    config: RetentionConfig,
    readers: Callable[[], Mapping[str, int]],
    *,
    now: Callable[[], datetime] = lambda: wall_now() + _LATER,
    bulk: Callable[[list[str]], dict[str, int]] | None = None,
) -> AsyncIterator[tuple[Archiver, PackedSnapshotStore]]:
    snapshots = PackedSnapshotStore(tmp_path / "snapshots", OSFiles())
    actors, records = _actors(wal, snapshots), LogRecordSource(wal, snapshots)

    archiver = Archiver(
        config,
        ArchiveFolder(Path(config.archive)),
        log=lambda: wal,
        readers=readers,
        snapshot_lsns=records.snapshot_lsns,
        snapshot_many=bulk if bulk is not None else records.snapshot_many,
        keep_snapshot=actors.keep_snapshot,
        now=now,
    )
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(actors.run)
            yield archiver, snapshots
            tg.cancel_scope.cancel()
    finally:
        snapshots.close()


@pytest.mark.parametrize("snapshots_by", ["bulk", "actors"])
async def test_segments_past_their_period_go_and_every_record_is_rebuilt_the_same(
    tmp_path: Path, snapshots_by: str
) -> None:
    """Billing-only segments go (batch_days), the one with a standard record (kept for good) stops the pass;
    the archive, then the log from its base, prove the whole chain; every record is rebuilt the same, whether
    the snapshots were made in bulk or each by its patient's actor (what bulk leaves out)."""
    bulk = None if snapshots_by == "bulk" else lambda _patients: {}
    config = _config(tmp_path, batch_days=1)
    async with open_wal(tmp_path / "wal", SMALL) as wal:
        standard_lsn = await _fill(wal, 300, 100)
        before = _rebuilt(wal, PackedSnapshotStore(tmp_path / "none", OSFiles()))
        holding = next(s for s in wal.sealed_segments() if s.first_lsn <= standard_lsn <= s.last_lsn)
        readers = lambda: {"route r": wal.last_lsn + 1}  # noqa: E731 -- a reader past everything
        async with _archiver(tmp_path, wal, config, readers, bulk=bulk) as (archiver, snapshots):
            went = await archiver.archive_due()
            status = archiver.status()
            assert went >= 3
            assert wal.first_lsn == holding.first_lsn
            assert "standard records, kept for good" in status.kept_because
            assert (status.archived_segments, status.archived_through_lsn) == (went, holding.first_lsn - 1)
            assert await archiver.archive_due() == 0  # nothing more may go: a second look changes nothing
            assert _rebuilt(wal, snapshots) == before
        base = BaseStore(wal.directory, OSFiles()).load()
    report = ArchiveFolder(Path(config.archive)).verify((base.first_lsn, base.prev_hash))
    assert (report.segments, report.first_lsn, report.last_lsn) == (went, 1, holding.first_lsn - 1)
    scanned = scan_log(tmp_path / "wal", OSFiles())
    assert (scanned.first_lsn, scanned.last_lsn) == (holding.first_lsn, standard_lsn + 100)


async def test_a_reader_behind_keeps_the_segment_it_still_needs(tmp_path: Path) -> None:
    config = _config(tmp_path, batch_days=1, standard_days=1)
    async with open_wal(tmp_path / "wal", SMALL) as wal:
        await _fill(wal, 300, 0)
        async with _archiver(tmp_path, wal, config, lambda: {"route lab": 5, "the read side": 10**9}) as (archiver, _):
            assert await archiver.archive_due() == 0
            assert archiver.status().kept_because.endswith("route lab still needs LSN 5")
        async with _archiver(tmp_path, wal, config, lambda: {"the search index": 0}) as (archiver, _):
            assert await archiver.archive_due() == 0
            assert "the search index cannot say where it is now" in archiver.status().kept_because
        assert wal.first_lsn == 1
    assert not list((tmp_path / "archive").glob("*.json"))


async def test_records_younger_than_their_period_stay(tmp_path: Path) -> None:
    config = _config(tmp_path, batch_days=1)
    async with open_wal(tmp_path / "wal", SMALL) as wal:
        await _fill(wal, 300, 0)
        async with _archiver(tmp_path, wal, config, dict, now=wall_now) as (archiver, _):
            assert await archiver.archive_due() == 0
            assert "its newest batch record is kept until" in archiver.status().kept_because
        assert wal.first_lsn == 1


async def test_a_damaged_archive_is_refused_naming_the_segment(tmp_path: Path) -> None:
    config = _config(tmp_path, batch_days=1)
    async with open_wal(tmp_path / "wal", SMALL) as wal:
        await _fill(wal, 300, 100)
        async with _archiver(tmp_path, wal, config, dict) as (archiver, _):
            assert await archiver.archive_due() >= 3
    folder = ArchiveFolder(Path(config.archive))
    first, second, *_ = folder.entries()
    gz = Path(config.archive) / f"{second.segment}.gz"
    data = bytearray(gz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    gz.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match=second.segment):
        folder.verify()
    (Path(config.archive) / f"{second.segment}.json").unlink()
    with pytest.raises(ArchiveError, match="a segment is missing"):
        folder.verify()
    assert first.first_lsn == 1


async def test_the_whole_history_reads_the_archive_then_the_log_each_record_once(tmp_path: Path) -> None:
    """What reaches back past retention (an access trail, a message's content) sees every LSN once, in order."""
    config = _config(tmp_path, batch_days=1)
    async with open_wal(tmp_path / "wal", SMALL) as wal:
        await _fill(wal, 300, 100)
        last = wal.last_lsn
        async with _archiver(tmp_path, wal, config, dict) as (archiver, _):
            assert await archiver.archive_due() >= 3
        first_kept = wal.first_lsn
    archive = ArchiveFolder(Path(config.archive))
    assert [r.lsn for r in whole_history(archive, tmp_path / "wal")] == list(range(1, last + 1))
    assert [r.lsn for r in whole_history(None, tmp_path / "wal")] == list(range(first_kept, last + 1))
    p3 = [r.lsn for r in whole_history(archive, tmp_path / "wal", from_lsn=40, patient="H|P3", decode=decode_events)]
    assert p3 == [n + 1 for n in range(39, 300) if n % _PATIENTS == 3] + [
        lsn for lsn in range(302, last + 1) if (20_000 + lsn - 302) % _PATIENTS == 3
    ]


async def test_a_merge_replayed_after_the_archive_still_brings_the_merged_patients_whole_history(
    tmp_path: Path,
) -> None:
    """A's snapshot is older than the A40 that merged B into it; B moved on after it, and B's early records
    were archived. Rebuilding A replays the merge: B's history comes from B's snapshot cut back to the merge,
    where it once was read from the log again (and would have lost what the archive took)."""
    config = _config(tmp_path, batch_days=1)
    async with open_wal(tmp_path / "wal", SMALL) as wal:
        for i in range(300):
            await wal.append([envelope(i, Lane.BATCH, patient="H|B", size=1000)])
        await wal.append([envelope(5000, Lane.STANDARD, patient="H|A")])  # standard: the archive stops here
        async with _archiver(tmp_path, wal, config, dict) as (_, snapshots):
            actors = _actors(wal, snapshots)
            async with anyio.create_task_group() as tg:
                await tg.start(actors.run)
                assert await actors.keep_snapshot("H|A") == wal.last_lsn  # A's snapshot: before the merge
                tg.cancel_scope.cancel()
            merge = msgspec.structs.replace(
                envelope(5001, Lane.STANDARD, patient="H|A"),
                other_patients=("H|B",),
                events=(PatientMerged("H|A", "H|B"),),
            )
            await wal.append([merge])
            await wal.append([envelope(5002, Lane.STANDARD, patient="H|B")])  # B goes on after the merge
            actors = _actors(wal, snapshots)
            async with anyio.create_task_group() as tg:
                await tg.start(actors.run)
                before = await actors.query("H|A")  # A's snapshot, then the merge: B's history from the log
                tg.cancel_scope.cancel()
        async with _archiver(tmp_path, wal, config, dict) as (archiver, snapshots):
            assert await archiver.archive_due() >= 3  # B's early records leave the log (B's snapshot is newer)
            actors = _actors(wal, snapshots)
            async with anyio.create_task_group() as tg:
                await tg.start(actors.run)
                after = await actors.query("H|A")  # activated afresh: A's snapshot, then the merge replayed
                tg.cancel_scope.cancel()
    assert before.facts == 300 + 1 + 1  # B's 300, A's own, the merge
    assert after == before


@pytest.mark.parametrize("where", ["header", "first deflate block", "deflate stream", "trailer"])
async def test_an_archived_segment_damaged_anywhere_is_named_not_a_crash(tmp_path: Path, where: str) -> None:
    """A flipped byte in the gzip header, the compressed data or the trailer: each an ArchiveError naming it."""
    config = _config(tmp_path, batch_days=1)
    async with open_wal(tmp_path / "wal", SMALL) as wal:
        await _fill(wal, 300, 100)
        async with _archiver(tmp_path, wal, config, dict) as (archiver, _):
            assert await archiver.archive_due() >= 3
    folder = ArchiveFolder(Path(config.archive))
    entry = folder.entries()[1]
    gz = Path(config.archive) / f"{entry.segment}.gz"
    data = bytearray(gz.read_bytes())
    # The first block's header follows gzip's 10 bytes (no name, mtime 0): flipped, zlib itself fails.
    at = {"header": 3, "first deflate block": 10, "deflate stream": len(data) // 2, "trailer": len(data) - 6}[where]
    data[at] ^= 0xFF
    gz.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match=entry.segment):
        folder.verify()
