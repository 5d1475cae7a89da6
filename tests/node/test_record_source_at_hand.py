"""Which activations the node's record source answers on the loop (`load_now`), and that they fold the same.

A short history is read whole from the log while the log holds every record
it was given, without asking the snapshot store; once segments are released,
or when a merge brought a history its snapshot holds folded, the usual way
(snapshot, then the tail) is taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

from actors import Applied, PatientRecord
from engine.core.model import PatientMerged
from engine.node.record_source import LogRecordSource
from engine.wal import OSFiles, Snapshot, SnapshotStore, WriteAheadLog, open_wal
from tests.harness.helpers import SMALL, envelope

pytestmark = pytest.mark.anyio


class _Counted:
    """The real snapshot store, counting the looks at it."""

    def __init__(self, store: SnapshotStore) -> None:
        self.store = store
        self.looks = 0

    def save(self, snapshot: Snapshot) -> None:
        self.store.save(snapshot)

    def save_many(self, snapshots: Sequence[Snapshot]) -> None:
        self.store.save_many(snapshots)

    def exists(self, key: str) -> bool:
        self.looks += 1
        return self.store.exists(key)

    def load(self, key: str, *, at_most_lsn: int | None = None) -> Snapshot | None:
        self.looks += 1
        return self.store.load(key, at_most_lsn=at_most_lsn)


async def _append(wal: WriteAheadLog, n: int, patient: str, *, merged: str | None = None) -> None:
    env = envelope(n, patient=patient, size=4000)
    if merged is not None:
        env = msgspec.structs.replace(env, events=(PatientMerged(patient, merged),), other_patients=(merged,))
    await wal.append([env])


def _fold(loaded: tuple[PatientRecord | None, Sequence[Applied]], patient: str) -> PatientRecord:
    record, tail = loaded
    start = record if record is not None else PatientRecord.empty(patient)
    return start.extend((a.lsn, a.recorded_at, a.message_id, a.events) for a in tail)


async def _snapshot_now(source: LogRecordSource, patient: str) -> None:
    await source.save(_fold(await source.load(patient), patient))


async def test_a_short_history_is_read_whole_without_asking_for_its_snapshot(tmp_path: Path) -> None:
    async with open_wal(tmp_path / "wal", SMALL) as wal:
        store = _Counted(SnapshotStore(tmp_path / "snapshots", OSFiles()))
        source = LogRecordSource(wal, store)
        for n in range(1, 4):
            await _append(wal, n, "H|A")
        await _snapshot_now(source, "H|A")
        for n in range(4, 7):
            await _append(wal, n, "H|A")
        store.looks = 0
        at_hand = source.load_now("H|A")
        assert at_hand is not None
        assert store.looks == 0
        assert at_hand[0] is None
        assert [a.lsn for a in at_hand[1]] == [1, 2, 3, 4, 5, 6]
        assert _fold(at_hand, "H|A") == _fold(await source.load("H|A"), "H|A")


async def test_a_patients_only_record_in_hand_is_given_back_not_read(tmp_path: Path) -> None:
    """Handed on after it became durable, a first-seen patient's record is its whole history: nothing is read."""
    async with open_wal(tmp_path / "wal", SMALL) as wal:
        source = LogRecordSource(wal, SnapshotStore(tmp_path / "snapshots", OSFiles()))
        await _append(wal, 1, "H|A")
        first = source.load_now("H|A")
        assert first is not None
        (read,) = first[1]
        in_hand = msgspec.structs.replace(read, message_id="in hand")  # told apart from what a read gives
        at_hand = source.load_now("H|A", in_hand)
        assert at_hand is not None
        assert at_hand[0] is None
        assert at_hand[1] == [in_hand]
        assert _fold((None, [read]), "H|A") == _fold(await source.load("H|A"), "H|A")
        await _append(wal, 2, "H|A")
        second = source.load_now("H|A", in_hand)  # two records: the history is read
        assert second is not None
        assert [a.message_id for a in second[1]] == [read.message_id, envelope(2, patient="H|A").message_id]


async def test_a_history_longer_than_a_few_records_is_a_threads_work(tmp_path: Path) -> None:
    async with open_wal(tmp_path / "wal", SMALL) as wal:
        source = LogRecordSource(wal, SnapshotStore(tmp_path / "snapshots", OSFiles()))
        for n in range(1, 18):
            await _append(wal, n, "H|A")
        assert source.load_now("H|A") is None
        assert len((await source.load("H|A"))[1]) == 17


async def test_once_segments_are_released_a_patient_with_a_snapshot_goes_the_usual_way(tmp_path: Path) -> None:
    async with open_wal(tmp_path / "wal", SMALL) as wal:
        source = LogRecordSource(wal, SnapshotStore(tmp_path / "snapshots", OSFiles()))
        for n in range(1, 4):
            await _append(wal, n, "H|A")
        await _snapshot_now(source, "H|A")
        for n in range(4, 40):  # 4 KB each: several 64 KB segments
            await _append(wal, n, "H|B")
        await _append(wal, 40, "H|A")
        await _append(wal, 41, "H|C")
        assert await wal.release_segments_before(30) > 0
        assert wal.first_lsn > 1
        assert source.load_now("H|A") is None  # its first records are gone from the log: the snapshot has them
        snapshot, tail = await source.load("H|A")
        assert snapshot is not None
        assert snapshot.last_lsn == 3
        assert [a.lsn for a in tail] == [40]
        fresh = source.load_now("H|C")  # no snapshot: what the log holds is all there is
        assert fresh is not None
        assert [a.lsn for a in fresh[1]] == [41]


async def test_a_merged_in_history_comes_from_the_survivors_snapshot(tmp_path: Path) -> None:
    async with open_wal(tmp_path / "wal", SMALL) as wal:
        source = LogRecordSource(wal, SnapshotStore(tmp_path / "snapshots", OSFiles()))
        for n in range(1, 4):
            await _append(wal, n, "H|M")
        await _append(wal, 4, "H|S", merged="H|M")
        at_hand = source.load_now("H|S")  # no snapshot yet: read whole (the actors fold the merge their way)
        assert at_hand is not None
        assert [a.lsn for a in at_hand[1]] == [4]
        await source.save(
            PatientRecord.empty("H|S").absorb(_fold(await source.load("H|M"), "H|M")).apply(4, "", "", ())
        )
        assert source.load_now("H|S") is None
        snapshot, _tail = await source.load("H|S")
        assert snapshot is not None
        assert snapshot.has_absorbed("H|M")
