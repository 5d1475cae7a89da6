"""The write-ahead log: appends, group commit, idempotency, reads, recovery, faults.

Faults are injected below the log through `tests.harness.faultfs.FaultyFiles`; each
test names the fault and the outcome DESIGN.md and the issue require.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import anyio
import msgspec
import pytest
from anyio.abc import TaskStatus
from structlog.testing import capture_logs

from engine.core.model import Envelope, Lane
from engine.infra.config import WalConfig
from engine.wal import (
    DiskFullError,
    KeyedCheckpoints,
    WALCorruptError,
    WALFailedError,
    WALLockedError,
    copy_cut,
    decode_events,
    open_wal,
    scan_log,
)
from engine.wal.files import FileLayer, OSFiles
from engine.wal.record import FRAME, SEGMENT_MAGIC, checksum
from tests.harness.faultfs import FaultyFiles
from tests.harness.helpers import SMALL, envelope

pytestmark = pytest.mark.anyio


async def append_all(
    directory: Path, envs: Sequence[Envelope], files: FileLayer | None = None, config: WalConfig = SMALL
) -> list[int]:
    async with open_wal(directory, config, files=files) as wal:
        return [p.lsn for e in envs for p in await wal.append([e])]


async def read_ids(directory: Path, files: FileLayer | None = None, config: WalConfig = SMALL) -> list[str]:
    async with open_wal(directory, config, files=files) as wal:
        return [r.message_id for r in wal.read_from(1)]


async def test_append_read_and_reopen(tmp_path: Path) -> None:
    """Appends get LSNs 1..n, survive a reopen byte-exact, and span several segments."""
    envs = [envelope(i, size=2000) for i in range(120)]
    assert list(range(1, 121)) == await append_all(tmp_path, envs)
    async with open_wal(tmp_path, SMALL) as wal:
        records = list(wal.read_from(1))
        assert [r.envelope for r in records] == envs
        assert [r.lsn for r in wal.read_from(57)] == list(range(57, 121))
        assert wal.statistics().segments > 2
        assert wal.lookup(envs[5].message_id) == 6
        assert wal.lookup("hl7:nope") is None


async def test_redelivery_is_acknowledged_with_the_same_lsn(tmp_path: Path) -> None:
    """Invariant 4: a message id already in the log is not appended again, across reopens too."""
    async with open_wal(tmp_path, SMALL) as wal:
        first = await wal.append([envelope(1), envelope(2)])
        again = await wal.append([envelope(2), envelope(3), envelope(3)])
        assert [(p.lsn, p.duplicate) for p in first] == [(1, False), (2, False)]
        assert [(p.lsn, p.duplicate) for p in again] == [(2, True), (3, False), (3, True)]
    async with open_wal(tmp_path, SMALL) as wal:
        assert [(p.lsn, p.duplicate) for p in await wal.append([envelope(1)])] == [(1, True)]
        assert wal.last_lsn == 3


async def test_patient_index_reads_without_a_scan(tmp_path: Path) -> None:
    """One patient's records, in order, including messages that touch them as a second patient."""
    envs = [envelope(i, patient="H|A" if i % 3 == 0 else "H|B") for i in range(30)]
    merge = envelope(99, patient="H|B")
    merge = Envelope(**{**{f: getattr(merge, f) for f in merge.__struct_fields__}, "other_patients": ("H|A",)})
    await append_all(tmp_path, [*envs, merge])
    async with open_wal(tmp_path, SMALL) as wal:
        a = [r.message_id for r in wal.read_patient("H|A")]
        assert a == [e.message_id for e in envs if e.patient == "H|A"] + [merge.message_id]
        assert list(wal.read_patient("H|nobody")) == []


async def test_a_patients_records_after_an_lsn_are_those_of_the_whole_read_after_it(tmp_path: Path) -> None:
    """Read newest first down to the LSN: the same records, in order, at every LSN, across segments."""
    envs = [envelope(i, patient="H|A" if i % 3 == 0 else "H|B", size=1500) for i in range(150)]
    await append_all(tmp_path, envs)
    async with open_wal(tmp_path, SMALL) as wal:
        assert wal.statistics().segments > 2
        for patient in ("H|A", "H|B"):
            whole = [r.lsn for r in wal.read_patient(patient)]
            for after in range(152):
                assert [r.lsn for r in wal.read_patient(patient, after_lsn=after)] == [n for n in whole if n > after]


async def test_a_patients_records_read_for_its_fold_carry_what_the_whole_records_do(tmp_path: Path) -> None:
    """`decode_events` skips the original bytes: LSN, time, id, events and lane as the whole record has them."""
    envs = [envelope(i, lane=(Lane.CRITICAL, Lane.STANDARD, Lane.BATCH)[i % 3], patient="H|A") for i in range(40)]
    await append_all(tmp_path, envs)
    async with open_wal(tmp_path, SMALL) as wal:
        for after in (0, 17):
            whole = [
                (r.lsn, r.recorded_at, r.message_id, r.envelope.events, r.envelope.lane)
                for r in wal.read_patient("H|A", after_lsn=after)
            ]
            folded = [
                (r.lsn, r.recorded_at, r.message_id, r.envelope.events, r.envelope.lane)
                for r in wal.read_patient("H|A", after_lsn=after, decode=decode_events)
            ]
            assert folded == whole
            assert len(whole) == 40 - after


@pytest.mark.parametrize("sync", ["inline", "thread"])
async def test_concurrent_appends_share_fsyncs(tmp_path: Path, sync: Literal["inline", "thread"]) -> None:
    """Group commit: 64 concurrent writers need far fewer fsyncs than records (the fsync on either thread)."""
    files = FaultyFiles()
    async with open_wal(tmp_path, WalConfig(commit_delay_ms=0, sync=sync), files=files) as wal:
        start = files.syncs

        async def writer(k: int) -> None:
            for i in range(10):
                await wal.append([envelope(k * 100 + i)])

        async with anyio.create_task_group() as tg:
            for k in range(64):
                tg.start_soon(writer, k)
        assert wal.last_lsn == 640
        assert files.syncs - start < 640 // 2
        assert wal.statistics().groups == files.syncs - start


async def test_second_process_is_locked_out(tmp_path: Path) -> None:
    """One process per log directory."""
    async with open_wal(tmp_path, SMALL):
        with pytest.raises(WALLockedError):
            async with open_wal(tmp_path, SMALL):
                pass


# -- crashes and recovery ------------------------------------------------------


async def _crash_mid_group(tmp_path: Path, files: FaultyFiles, acked: list[str], torn_bytes: int) -> None:
    """Append until the next sync 'loses power'; keep the acknowledged ids."""
    async with open_wal(tmp_path, SMALL, files=files) as wal:
        for i in range(40):
            await wal.append([envelope(i)])
            acked.append(envelope(i).message_id)
        files.die_at_sync = True
        with pytest.raises(WALFailedError):
            await wal.append([envelope(1000), envelope(1001), envelope(1002)])
    files.power_loss(torn_bytes=torn_bytes)


@pytest.mark.parametrize("torn_bytes", [0, 1, 7, 9, 150, 700])
async def test_crash_mid_write_keeps_every_acknowledged_record(tmp_path: Path, torn_bytes: int) -> None:
    """Torn writes and dropped unsynced writes: the tail is truncated, with one warning; nothing acked is lost."""
    files = FaultyFiles()
    acked: list[str] = []
    await _crash_mid_group(tmp_path, files, acked, torn_bytes)
    with capture_logs() as logs:
        ids = await read_ids(tmp_path, files)
    # Every acknowledged record, in order; at most the unacknowledged ones of
    # the torn group after them (durable but never acknowledged is allowed).
    assert acked == ids[: len(acked)]
    assert set(ids[len(acked) :]) <= {envelope(i).message_id for i in (1000, 1001, 1002)}
    warnings = [entry for entry in logs if entry["event"] == "wal.torn_tail_truncated"]
    if torn_bytes:
        [warning] = warnings
        assert warning["segment"].endswith(".seg")
        assert warning["offset"] > 0
    else:
        assert warnings == []
    # The repaired log accepts appends and verifies end to end.
    await append_all(tmp_path, [envelope(5000)], files)
    assert scan_log(tmp_path, files).last_lsn == len(ids) + 1


def _last_segment(directory: Path) -> Path:
    return max(directory.glob("*.seg"))


async def test_garbage_in_the_tail_is_truncated(tmp_path: Path) -> None:
    """Garbage after the last record (a crash mid-write on some file systems) is cut off."""
    envs = [envelope(i) for i in range(20)]
    await append_all(tmp_path, envs)
    with _last_segment(tmp_path).open("ab") as f:
        f.write(b"\x00\x01garbage\xff" * 10)
    with capture_logs() as logs:
        assert [e.message_id for e in envs] == await read_ids(tmp_path)
    assert any(e["event"] == "wal.torn_tail_truncated" for e in logs)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


async def test_bit_flip_in_the_middle_refuses_to_open(tmp_path: Path) -> None:
    """Corruption before the tail: refuse, naming segment, offset and `vigil wal verify`."""
    await append_all(tmp_path, [envelope(i) for i in range(60)])
    first = min(tmp_path.glob("*.seg"))
    _flip(first, len(SEGMENT_MAGIC) + 300)
    with pytest.raises(WALCorruptError) as info:
        await read_ids(tmp_path)
    assert info.value.segment == first.name
    assert info.value.offset >= len(SEGMENT_MAGIC)
    assert "vigil wal verify" in str(info.value)


async def test_bit_flip_in_the_last_segment_with_records_after_refuses(tmp_path: Path) -> None:
    """Damage in the last segment is corruption, not a torn tail, when valid records follow."""
    await append_all(tmp_path, [envelope(i) for i in range(10)], config=WalConfig())
    (tmp_path / "index").unlink()  # as after a crash: the tail logic, not the index, decides
    _flip(_last_segment(tmp_path), len(SEGMENT_MAGIC) + 100)
    with pytest.raises(WALCorruptError, match="valid records follow"):
        await read_ids(tmp_path, config=WalConfig())


async def test_edited_record_breaks_the_hash_chain(tmp_path: Path) -> None:
    """A record edited with a recomputed CRC is caught by the chain."""
    await append_all(tmp_path, [envelope(i) for i in range(10)], config=WalConfig(checkpoint_records_interval=10**9))
    (tmp_path / "checkpoint").unlink()
    seg = _last_segment(tmp_path)
    data = bytearray(seg.read_bytes())
    pos = len(SEGMENT_MAGIC)
    length, _ = FRAME.unpack_from(data, pos)
    pos += FRAME.size + length  # the second record
    length, _ = FRAME.unpack_from(data, pos)
    body = bytearray(data[pos + FRAME.size : pos + FRAME.size + length])
    i = body.index(b"test")
    body[i : i + 4] = b"TEST"
    data[pos + FRAME.size : pos + FRAME.size + length] = body
    FRAME.pack_into(data, pos, length, checksum(bytes(data[pos : pos + 4]), bytes(body)))
    seg.write_bytes(bytes(data))
    with pytest.raises(WALCorruptError, match="hash chain broken at LSN 3"):
        await read_ids(tmp_path, config=WalConfig())


async def test_missing_segment_is_a_gap(tmp_path: Path) -> None:
    """A deleted segment leaves a gap in LSNs: refuse."""
    await append_all(tmp_path, [envelope(i, size=3000) for i in range(80)])
    segments = sorted(tmp_path.glob("*.seg"))
    segments[1].unlink()
    with pytest.raises(WALCorruptError, match="missing"):
        await read_ids(tmp_path)


async def test_damaged_checkpoint_is_ignored_and_everything_verified(tmp_path: Path) -> None:
    """A checkpoint that fails its CRC is ignored with a warning; the full chain is checked instead."""
    envs = [envelope(i) for i in range(30)]
    await append_all(tmp_path, envs)
    _flip(tmp_path / "checkpoint", 12)
    with capture_logs() as logs:
        assert [e.message_id for e in envs] == await read_ids(tmp_path)
    assert any(e["event"] == "wal.checkpoint_ignored" for e in logs)


async def test_checkpoint_beyond_the_log_refuses(tmp_path: Path) -> None:
    """A checkpoint for records the log no longer has means acknowledged data was lost."""
    await append_all(tmp_path, [envelope(i) for i in range(30)])
    (tmp_path / "index").unlink()  # the checkpoint alone must catch it
    seg = _last_segment(tmp_path)
    seg.write_bytes(seg.read_bytes()[:-1])  # the last (checkpointed) record loses a byte
    with pytest.raises(WALCorruptError, match="checkpoint at LSN 30"):
        await read_ids(tmp_path)


# -- I/O errors ----------------------------------------------------------------


@pytest.mark.parametrize("sync", ["inline", "thread"])
async def test_fsync_error_stops_the_log_for_good(tmp_path: Path, sync: Literal["inline", "thread"]) -> None:
    """fsync raising EIO: the append fails, later appends are refused, no retry on the file."""
    files = FaultyFiles()
    async with open_wal(tmp_path, msgspec.structs.replace(SMALL, sync=sync), files=files) as wal:
        await wal.append([envelope(1)])
        files.sync_errno = errno.EIO
        with pytest.raises(WALFailedError, match="appends are refused"):
            await wal.append([envelope(2)])
        files.sync_errno = None  # the disk "recovers": the log must still refuse
        with pytest.raises(WALFailedError):
            await wal.append([envelope(3)])
        assert wal.statistics().failed is not None
        assert [r.lsn for r in wal.read_from(1)] == [1]  # reads still work
    files.power_loss()
    assert await read_ids(tmp_path, files) == [envelope(1).message_id]


@pytest.mark.parametrize("sync", ["inline", "thread"])
async def test_disk_full_refuses_then_resumes(tmp_path: Path, sync: Literal["inline", "thread"]) -> None:
    """ENOSPC mid-write: that group is refused and its partial bytes removed; reads work; appends resume."""
    files = FaultyFiles()
    async with open_wal(tmp_path, msgspec.structs.replace(SMALL, sync=sync), files=files) as wal:
        await wal.append([envelope(1)])
        files.write_errno, files.write_partial_bytes = errno.ENOSPC, 37
        with pytest.raises(DiskFullError, match="retry later"):
            await wal.append([envelope(2), envelope(3)])
        assert [r.lsn for r in wal.read_from(1)] == [1]
        positions = await wal.append([envelope(2)])
        assert [p.lsn for p in positions] == [2]
        assert wal.statistics().disk_full_refusals == 1
    assert [envelope(1).message_id, envelope(2).message_id] == await read_ids(tmp_path, files)
    assert scan_log(tmp_path, files).last_lsn == 2


async def test_disk_full_at_segment_roll_leaves_no_segment(tmp_path: Path) -> None:
    """ENOSPC while beginning a segment: refused, no half-made segment left behind."""
    files = FaultyFiles()
    config = WalConfig(segment_bytes_max=64 * 1024)
    async with open_wal(tmp_path, config, files=files) as wal:
        while wal.statistics().segments == 1:
            before = len(list(tmp_path.glob("*.seg")))
            files.write_errno, files.write_partial_bytes = errno.ENOSPC, 3
            big = envelope(wal.last_lsn + 1, size=30_000)
            try:
                await wal.append([big])
            except DiskFullError:
                assert len(list(tmp_path.glob("*.seg"))) == before
                files.write_errno = None
                await wal.append([big])
        assert scan_log(tmp_path, files).last_lsn == wal.last_lsn


# -- lanes and the commit delay -------------------------------------------------


def test_critical_never_waits_for_the_batch_window(tmp_path: Path) -> None:
    """With a 30 s commit delay: a lone batch sender never waits; once groups have company a batch-only
    group waits for more; a critical record ends the wait at once.

    Deterministic time: trio's MockClock jumps ahead whenever every task waits.
    """
    import trio
    import trio.testing

    config = WalConfig(commit_delay_ms=30_000)

    async def scenario() -> tuple[float, float, float, float]:
        async with open_wal(tmp_path, config) as wal:

            async def flood(first: int) -> None:  # appends arriving together: a group with company
                async with trio.open_nursery() as nursery:
                    for i in range(first, first + 4):
                        nursery.start_soon(wal.append, [envelope(i, Lane.BATCH)])

            start = trio.current_time()
            for i in range(3):  # one at a time, each waiting for its answer: no company to wait for
                await wal.append([envelope(i, Lane.BATCH)])
            lone = trio.current_time() - start
            await flood(10)
            start = trio.current_time()
            batch_waited = 0.0

            async def batch() -> None:
                nonlocal batch_waited
                await wal.append([envelope(30, Lane.BATCH)])
                batch_waited = trio.current_time() - start

            async with trio.open_nursery() as nursery:
                nursery.start_soon(batch)
                await trio.sleep(1)
                await wal.append([envelope(31, Lane.CRITICAL)])
            with_critical = trio.current_time() - start
            await flood(40)
            start = trio.current_time()
            await wal.append([envelope(50, Lane.BATCH)])
            return lone, batch_waited, with_critical, trio.current_time() - start

    lone, batch_waited, with_critical, in_flood = trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    assert lone < 1
    assert 1 <= batch_waited < 2  # it waited for company, until the critical record came
    assert with_critical < 2
    assert in_flood >= 30


async def test_recovery_makes_the_page_cache_tail_durable(tmp_path: Path) -> None:
    """After a process crash, records read back from the page cache are synced before being served.

    Otherwise a redelivery answered "duplicate" from such a record could be
    acknowledged and then lost to a later power cut.
    """
    files = FaultyFiles()
    async with open_wal(tmp_path, SMALL, files=files) as wal:
        await wal.append([envelope(1)])
        files.die_at_sync = True
        with pytest.raises(WALFailedError):
            await wal.append([envelope(2)])
    # A process crash, not a power cut: the unsynced record is still in the file.
    files.dead = False
    files.die_at_sync = False
    async with open_wal(tmp_path, SMALL, files=files) as wal:
        assert [(p.lsn, p.duplicate) for p in await wal.append([envelope(2)])] == [(2, True)]
        segment = _last_segment(tmp_path)
        assert files.durable[segment] == files.size(segment)


@pytest.mark.parametrize("sync", ["inline", "thread"])
async def test_disk_full_under_concurrency_refuses_one_group_and_leaves_no_gap(
    tmp_path: Path, sync: Literal["inline", "thread"]
) -> None:
    """Many writers, the disk full once: that group is refused, the next is chained on the durable end, no gap."""
    files = FaultyFiles()
    acked: list[str] = []
    refused: list[str] = []
    config = WalConfig(commit_delay_ms=0, group_records_max=4, sync=sync)
    async with open_wal(tmp_path, config, files=files) as wal:
        await wal.append([envelope(0)])
        acked.append(envelope(0).message_id)
        files.write_errno, files.write_partial_bytes = errno.ENOSPC, 100

        async def writer(k: int) -> None:
            for i in range(5):
                env = envelope(1000 * k + i + 1)
                try:
                    await wal.append([env])
                except DiskFullError:
                    refused.append(env.message_id)
                else:
                    acked.append(env.message_id)

        async with anyio.create_task_group() as tg:
            for k in range(1, 17):
                tg.start_soon(writer, k)
        assert refused
        assert wal.statistics().disk_full_refusals == 1
    ids = await read_ids(tmp_path, files)
    assert sorted(acked) == sorted(ids)
    result = scan_log(tmp_path, files)
    assert result.records == result.hashed_records == len(ids)


async def _state(directory: Path) -> tuple[list[str], list[int | None], list[list[int]]]:
    async with open_wal(directory, SMALL) as wal:
        ids = [r.message_id for r in wal.read_from(1)]
        lookups = [wal.lookup(m) for m in ids]
        patients = [[r.lsn for r in wal.read_patient(f"H|P{k}")] for k in range(7)]
        return ids, lookups, patients


async def test_saved_index_gives_the_same_state_as_a_full_scan(tmp_path: Path) -> None:
    """A clean stop saves the indexes; the next start resumes from them, to the same state."""
    await append_all(tmp_path, [envelope(i, size=1500) for i in range(300)])
    stale = (tmp_path / "index").read_bytes()
    with capture_logs() as logs:
        fast = await _state(tmp_path)
    [opened] = [e for e in logs if e["event"] == "wal.opened"]
    assert opened["hashed"] == 0  # nothing after the index: no record decoded
    (tmp_path / "index").unlink()
    assert fast == await _state(tmp_path)  # a full scan agrees
    # Appends go on after an index-resumed start; an index older than the
    # checkpoint (saved at an earlier stop) still resumes correctly.
    await append_all(tmp_path, [envelope(90_000)])
    (tmp_path / "index").write_bytes(stale)
    assert [*fast[0], envelope(90_000).message_id] == await read_ids(tmp_path)


async def test_damaged_index_is_ignored(tmp_path: Path) -> None:
    """An index that fails its CRC is ignored with a warning; the full scan takes over."""
    envs = [envelope(i) for i in range(40)]
    await append_all(tmp_path, envs)
    _flip(tmp_path / "index", 20)
    with capture_logs() as logs:
        assert [e.message_id for e in envs] == await read_ids(tmp_path)
    assert any(e["event"] == "wal.index_ignored" for e in logs)


async def test_index_naming_missing_segments_refuses(tmp_path: Path) -> None:
    """If segments the index names are gone, records are gone: refuse."""
    await append_all(tmp_path, [envelope(i, size=3000) for i in range(80)])
    min(tmp_path.glob("*.seg")).unlink()
    with pytest.raises(WALCorruptError, match="missing"):
        await read_ids(tmp_path)


RELEASING = WalConfig(
    segment_bytes_max=64 * 1024,
    checkpoint_records_interval=50,
    sparse_index_records_interval=4,
)


async def test_released_segments_leave_a_verifiable_log(tmp_path: Path) -> None:
    """Old segments go; reads, the patient index, reopen and the chain (from the base) still work."""
    envs = [envelope(i, size=3000) for i in range(100)]
    async with open_wal(tmp_path, RELEASING) as wal:
        for e in envs:
            await wal.append([e])
        segments_before = wal.statistics().segments
        released = await wal.release_segments_before(60)
        assert released > 0
        assert wal.statistics().segments == segments_before - released
        first = wal.first_lsn
        assert 1 < first <= 60
        assert [r.lsn for r in wal.read_from(1)] == list(range(first, 101))
        assert all(r.lsn >= first for r in wal.read_patient("H|P0"))
        await wal.append([envelope(500)])
    async with open_wal(tmp_path, RELEASING) as wal:
        assert wal.first_lsn == first
        assert [r.lsn for r in wal.read_from(1)] == list(range(first, 102))
    result = scan_log(tmp_path, OSFiles())
    assert (result.first_lsn, result.last_lsn, result.hashed_records) == (first, 101, 102 - first)


async def test_a_copy_in_progress_keeps_every_segment_and_the_copy_recovers_to_its_cut(tmp_path: Path) -> None:
    """While a cut is held no segment is released; the copy of its durable prefixes is a whole log."""
    async with open_wal(tmp_path / "log", RELEASING) as wal:
        for i in range(100):
            await wal.append([envelope(i, size=3000)])
        with wal.cut() as cut:
            await wal.append([envelope(101, size=3000)])  # past the cut: not in the copy
            assert await wal.release_segments_before(60) == 0
            copy_cut(wal.directory, cut, tmp_path / "copy")
        assert await wal.release_segments_before(60) > 0
    assert cut.last_lsn == 100
    result = scan_log(tmp_path / "copy", OSFiles())
    assert (result.first_lsn, result.last_lsn, result.hashed_records) == (1, 100, 100)


async def test_release_interrupted_by_a_crash(tmp_path: Path) -> None:
    """The base is written first: a crash before the deletions leaves extra segments, removed at open."""
    async with open_wal(tmp_path, RELEASING) as wal:
        for i in range(100):
            await wal.append([envelope(i, size=3000)])
    keep = {p.name: p.read_bytes() for p in tmp_path.glob("*.seg")}
    async with open_wal(tmp_path, RELEASING) as wal:
        await wal.release_segments_before(60)
        first = wal.first_lsn
    for name, data in keep.items():  # the deletions "never happened"
        (tmp_path / name).write_bytes(data)
    async with open_wal(tmp_path, RELEASING) as wal:
        assert wal.first_lsn == first
        assert next(r.lsn for r in wal.read_from(1)) == first
    assert min(p.name for p in tmp_path.glob("*.seg")) == f"{first:020d}.seg"


def test_the_events_only_record_has_the_log_records_layout() -> None:
    """The read side decodes bodies as `EventsRecord`: its fields must stay those of `LogRecord`, in order."""
    from engine.wal.record import EventsRecord, LogRecord

    assert [f.name for f in msgspec.structs.fields(EventsRecord)] == [f.name for f in msgspec.structs.fields(LogRecord)]


class _HeldSync(OSFiles):
    """The real files, but an fsync, once armed, waits for the test: the writer is busy while appends queue."""

    def __init__(self) -> None:
        self.armed = False
        self.holding = threading.Event()
        self.release = threading.Event()

    def sync(self, handle: int) -> None:
        if self.armed:
            self.armed = False
            self.holding.set()
            self.release.wait(30)
        super().sync(handle)


async def test_urgent_appends_go_ahead_of_queued_batch_ones_but_never_past_their_patient(tmp_path: Path) -> None:
    """200 batch appends queued behind a busy writer, a critical and a standard one among them: those two
    are written first, unless an earlier queued append holds one of their patients; batch groups stay small."""
    config = WalConfig(batch_group_records_max=64, sync="thread")
    files = _HeldSync()
    lsns: dict[str, int] = {}
    queued = [envelope(i, Lane.BATCH, patient=f"H|B{i}") for i in range(200)]
    queued[150] = envelope(150, Lane.CRITICAL, patient="H|alone")
    queued[160] = envelope(160, Lane.STANDARD, patient="H|alone-too")
    queued[170] = envelope(170, Lane.CRITICAL, patient="H|B100")  # behind that patient's batch record

    async def one(env: Envelope, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        lsns[env.message_id] = (await wal.append([env]))[0].lsn  # queued before this task first waits

    async with open_wal(tmp_path, config, files=files) as wal:
        files.armed = True
        async with anyio.create_task_group() as tg:
            await tg.start(one, queued[0])
            await anyio.to_thread.run_sync(files.holding.wait)  # the writer is in its first fsync
            for env in queued[1:]:  # queued in this order
                await tg.start(one, env)
            files.release.set()
        groups = wal.statistics().groups

    first_batch = min(lsns[e.message_id] for e in queued[1:] if e.lane is Lane.BATCH)
    assert lsns["hl7:APP|FAC|150"] < first_batch
    assert lsns["hl7:APP|FAC|160"] < first_batch
    assert lsns["hl7:APP|FAC|170"] > lsns["hl7:APP|FAC|100"]
    assert groups >= 1 + 200 // 64  # no group holds more than 64 batch records
    assert sorted(lsns.values()) == list(range(1, 201))


class _SteppedSync(OSFiles):
    """The real files, but once `rounds` is set, each of that many fsyncs waits for the test to let it go."""

    def __init__(self) -> None:
        self.rounds = 0
        self.entered = threading.Semaphore(0)
        self.proceed = threading.Semaphore(0)

    def sync(self, handle: int) -> None:
        if self.rounds > 0:
            self.rounds -= 1
            self.entered.release()
            self.proceed.acquire(timeout=30)
        super().sync(handle)


async def test_a_batch_append_is_overtaken_by_one_urgent_group_at_most(tmp_path: Path) -> None:
    """Urgent appends arriving during every fsync (the sync thread under 32 connections): they went ahead of a
    queued batch append group after group, and a billing message waited 400 ms for its ACK. Now urgent appends
    overtake it once; the next group takes the queue in order."""
    config = WalConfig(sync="thread")
    files = _SteppedSync()
    lsns: dict[str, int] = {}
    billing = envelope(1, Lane.BATCH, patient="H|B")
    results = [envelope(10 + i, Lane.STANDARD, patient=f"H|R{i}") for i in range(6)]

    async def one(env: Envelope, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        lsns[env.message_id] = (await wal.append([env]))[0].lsn  # queued before this task first waits

    async with open_wal(tmp_path, config, files=files) as wal:
        await wal.append([envelope(99, Lane.BATCH, patient="H|before")])  # the segment begun, its syncs done
        files.rounds = 6
        async with anyio.create_task_group() as tg:
            await tg.start(one, envelope(0, Lane.BATCH, patient="H|first"))  # batch: never written by its caller
            await anyio.to_thread.run_sync(files.entered.acquire)  # the writer is in its first fsync
            await tg.start(one, billing)
            await tg.start(one, results[0])
            for result in results[1:]:  # one more urgent append arrives during each fsync
                files.proceed.release()
                await anyio.to_thread.run_sync(files.entered.acquire)
                await tg.start(one, result)
            files.proceed.release()

    # LSN 2 the first append; results[0] goes ahead (3); then the queue in order: the billing record, results[1].
    assert lsns[billing.message_id] == 4
    assert sorted(lsns.values()) == list(range(2, 10))


class _SyncsOnThreads(OSFiles):
    """The real files; which fsyncs ran on the event loop's thread; once armed, one in a worker thread waits."""

    def __init__(self, loop_thread: threading.Thread) -> None:
        self.loop_thread = loop_thread
        self.on_loop: list[bool] = []
        self.armed = False
        self.holding = threading.Event()
        self.release = threading.Event()

    def sync(self, handle: int) -> None:
        on_loop = threading.current_thread() is self.loop_thread
        self.on_loop.append(on_loop)
        if self.armed and not on_loop:
            self.armed = False
            self.holding.set()
            self.release.wait(30)
        super().sync(handle)


async def test_auto_sync_writes_urgent_groups_in_a_thread_and_groups_with_batch_work_on_the_loop(
    tmp_path: Path,
) -> None:
    """`sync = "auto"`: a group of urgent records with no batch work queued is fsync'd in a worker thread (the loop
    parses the next messages meanwhile); an urgent group that went ahead of a queued billing append, and the billing
    group, are fsync'd on the loop's thread, as under a billing flood, where the hop cost more than it saved."""
    files = _SyncsOnThreads(threading.current_thread())
    lsns: dict[str, int] = {}
    results = [envelope(1, Lane.STANDARD, patient="H|R1"), envelope(2, Lane.STANDARD, patient="H|R2")]
    billing = envelope(3, Lane.BATCH, patient="H|B")
    later = envelope(4, Lane.CRITICAL, patient="H|R4")

    async def one(envs: list[Envelope], *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        for env, at in zip(envs, await wal.append(envs), strict=True):  # queued before this task first waits
            lsns[env.message_id] = at.lsn

    async with open_wal(tmp_path, WalConfig(sync="auto"), files=files) as wal:
        await wal.append([envelope(0, Lane.BATCH, patient="H|before")])  # the segment begun, its syncs done
        files.on_loop.clear()
        files.armed = True
        async with anyio.create_task_group() as tg:
            await tg.start(one, results)  # two records: the writer's, never written by their caller
            assert await anyio.to_thread.run_sync(files.holding.wait, 30)  # the writer is in a worker thread's fsync
            await tg.start(one, [billing])
            await tg.start(one, [later])
            files.release.set()
        on_loop = list(files.on_loop)

    assert on_loop == [False, True, True]
    assert lsns[later.message_id] < lsns[billing.message_id]  # it went ahead, on the loop's thread


async def test_auto_sync_writes_one_connections_messages_one_at_a_time_on_the_loop(tmp_path: Path) -> None:
    """`sync = "auto"`: urgent messages that come one at a time (a single connection waiting for each ACK) are
    fsync'd on the loop's thread, whether their caller or the writer commits them: the loop has nothing to parse
    during their fsync, and the hop to a thread cost one connection about a quarter of its throughput."""
    files = _SyncsOnThreads(threading.current_thread())
    async with open_wal(tmp_path, WalConfig(sync="auto"), files=files) as wal:
        await wal.append([envelope(0, Lane.BATCH, patient="H|before")])  # the segment begun, its syncs done
        files.on_loop.clear()
        for i in range(1, 9):  # each the next as soon as the last is durable: within 1 ms, so most go to the writer
            await wal.append([envelope(i, Lane.STANDARD, patient=f"H|R{i}")])
        on_loop = list(files.on_loop)
    assert on_loop == [True] * 8


async def test_an_urgent_append_goes_ahead_of_another_sources_batch_records_of_its_patient(tmp_path: Path) -> None:
    """A billing file queued for patient P; a critical result for P from an MLLP connection goes first (the
    order of independent sources is the network's, not a history), while one from the file itself stays after."""
    config = WalConfig(batch_group_records_max=64, sync="thread")
    files = _HeldSync()
    lsns: dict[str, int] = {}
    queued = [
        msgspec.structs.replace(envelope(i, Lane.BATCH, patient="H|P"), source="file:billing.hl7") for i in range(100)
    ]
    queued[80] = msgspec.structs.replace(envelope(80, Lane.CRITICAL, patient="H|P"), source="mllp:10.0.0.5:41122")
    queued[90] = msgspec.structs.replace(envelope(90, Lane.CRITICAL, patient="H|P"), source="file:billing.hl7")

    async def one(env: Envelope, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        lsns[env.message_id] = (await wal.append([env]))[0].lsn

    async with open_wal(tmp_path, config, files=files) as wal:
        files.armed = True
        async with anyio.create_task_group() as tg:
            await tg.start(one, queued[0])
            await anyio.to_thread.run_sync(files.holding.wait)  # the writer is in its first fsync
            for env in queued[1:]:
                await tg.start(one, env)
            files.release.set()

    first_batch = min(lsns[e.message_id] for e in queued[1:] if e.lane is Lane.BATCH)
    assert lsns["hl7:APP|FAC|80"] < first_batch
    assert lsns["hl7:APP|FAC|90"] > lsns["hl7:APP|FAC|89"]


async def test_a_group_covers_at_most_group_bytes_max(tmp_path: Path) -> None:
    """Appends of 40 KiB queued behind a busy writer, with groups of 64 KiB at most: each is written alone."""
    config = WalConfig(group_bytes_max=64 * 1024, sync="thread")
    files = _HeldSync()
    queued = [envelope(i, Lane.STANDARD, size=40 * 1024) for i in range(5)]

    async def one(env: Envelope, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await wal.append([env])

    async with open_wal(tmp_path, config, files=files) as wal:
        files.armed = True
        async with anyio.create_task_group() as tg:
            await tg.start(one, queued[0])
            await anyio.to_thread.run_sync(files.holding.wait)
            for env in queued[1:]:
                await tg.start(one, env)
            files.release.set()
        assert wal.statistics().groups == 5


async def test_a_log_closed_by_cancellation_still_checkpoints_and_saves_its_index(tmp_path: Path) -> None:
    """A node stops by cancelling its task group: the log's close (checkpoint, keyed checkpoint, index) still runs."""
    with anyio.CancelScope() as scope:
        async with open_wal(tmp_path, SMALL, audit_key=b"k" * 32) as wal:
            await wal.append([envelope(i) for i in range(5)])
            scope.cancel()
            await anyio.sleep(1)  # the cancellation lands here, as a node's stop does
    assert {"checkpoint", "index", "audit.chk"} <= {p.name for p in tmp_path.iterdir()}


async def test_an_urgent_append_to_an_idle_writer_is_written_by_its_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No hand-off to the writer and back (two turns of the loop under a flood): durable, checkpointed as
    due, and a batch append still goes through the writer."""
    monkeypatch.setattr("engine.wal.log._ALONE_S", 0.0)  # every urgent append comes "alone"
    config = WalConfig(commit_delay_ms=0, checkpoint_records_interval=5)
    async with open_wal(tmp_path, config) as wal:
        await anyio.sleep(0.01)  # the writer is idle
        for i in range(12):
            await wal.append([envelope(i, Lane.CRITICAL if i % 2 else Lane.STANDARD)])
        direct = wal.statistics().direct_commits
        assert direct >= 11  # the one after a due checkpoint's wake-up call goes by the writer
        await wal.append([envelope(99, Lane.BATCH)])
        assert wal.statistics().direct_commits == direct
        assert wal.last_lsn == 13
        # Due after 5 records: begun beside the direct commits (in a thread; it may still be writing).
        assert wal._checkpointing or (tmp_path / "checkpoint").exists()
    async with open_wal(tmp_path, config) as wal:
        assert wal.last_lsn == 13
        assert [r.lsn for r in wal.read_from(1)] == list(range(1, 14))


async def test_a_checkpoint_taken_beside_the_writer_pairs_each_lsn_with_its_own_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer commits the next group while the checkpoint's thread starts: the keyed checkpoint must still
    sign LSN n with record n's hash (it read the LSN and the hash apart, in the thread: a false tamper alarm)."""
    key = b"k" * 32
    async with open_wal(tmp_path, SMALL, audit_key=key) as wal:
        await wal.append([envelope(1)])
        first = (wal.last_lsn, wal._last_hash)
        await wal.append([envelope(2)])
        second = (wal.last_lsn, wal._last_hash)
        wal._last_lsn, wal._last_hash = first  # as it was when the checkpoint fell due
        real = anyio.to_thread.run_sync

        async def writer_moves_the_lsn(func: object, *args: object) -> object:
            wal._last_lsn = second[0]  # the next group's LSN is in; its hash not yet
            return await real(func, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(anyio.to_thread, "run_sync", writer_moves_the_lsn)
        wal._checkpointing = True
        await wal._checkpoint_beside()
        monkeypatch.undo()
        wal._last_lsn, wal._last_hash = second
    entries = KeyedCheckpoints(tmp_path, OSFiles(), key).entries()
    assert (entries[0].lsn, entries[0].hash) == first


async def test_a_reused_control_id_names_the_first_copy_even_in_the_same_group(tmp_path: Path) -> None:
    """Other content under an id: both kept, and the warning names the first copy's LSN, in flight or durable."""
    first = msgspec.structs.replace(envelope(1), digest=11)
    same_group = msgspec.structs.replace(envelope(2), message_id=first.message_id, digest=22)
    later = msgspec.structs.replace(envelope(3), message_id=first.message_id, digest=33)
    async with open_wal(tmp_path, SMALL) as wal:
        with capture_logs() as logs:
            assert [p.lsn for p in await wal.append([first, same_group])] == [1, 2]
            assert [p.lsn for p in await wal.append([later])] == [3]
        assert wal.statistics().reused_control_ids == 2
    said = [(e["lsn"], e["first_lsn"]) for e in logs if e["event"] == "wal.control_id_reused"]
    assert said == [(2, 1), (3, 1)]
