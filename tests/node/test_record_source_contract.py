"""One contract, two implementations of what patient actors stand on: their history, snapshots and quarantine.

In memory (`tests.harness.memory_actors`, what the actor tests use) and on
the log (`engine.node.record_source`, what a node uses). The actor tests
prove the actors right only while the memory twin keeps the same contract
as the log; every test here runs on both, on both event loops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from actors import Applied, PatientRecord, Quarantine, RecordSource
from engine.core.model import Event
from engine.node.record_source import LogRecordSource, PoisonQuarantine
from engine.wal import OSFiles, SnapshotStore, WriteAheadLog, open_wal
from engine.wal import Quarantine as QuarantineLog
from tests.harness.helpers import SMALL, envelope
from tests.harness.memory_actors import MemoryLog, MemoryQuarantine

pytestmark = pytest.mark.anyio


class Backend(Protocol):
    source: RecordSource
    quarantine: Quarantine

    async def add(self, patient: str) -> Applied:
        """One more record of this patient's history, as the log would hand it to the actor."""
        ...

    def quarantined(self) -> list[tuple[int, str]]:
        """(LSN, reason) of each quarantined record."""
        ...


class _Memory:
    def __init__(self) -> None:
        self.log = MemoryLog()
        self.source: RecordSource = self.log
        self.memory = MemoryQuarantine()
        self.quarantine: Quarantine = self.memory
        self._lsn = 0

    async def add(self, patient: str) -> Applied:
        self._lsn += 1
        env = envelope(self._lsn, patient=patient)
        item = Applied(self._lsn, "2026-11-24T10:00:00Z", env.message_id, env.events, env.lane)
        self.log.append(patient, item)
        return item

    def quarantined(self) -> list[tuple[int, str]]:
        return [(lsn, reason) for _patient, lsn, reason in self.memory.items]


class _OnTheLog:
    def __init__(self, wal: WriteAheadLog, directory: Path) -> None:
        self.wal = wal
        self.source = LogRecordSource(wal, SnapshotStore(directory / "snapshots", OSFiles()))
        self.log = QuarantineLog(directory / "quarantine", OSFiles())
        self.quarantine = PoisonQuarantine(wal, self.log)
        self._n = 0

    async def add(self, patient: str) -> Applied:
        self._n += 1
        env = envelope(self._n, patient=patient)
        [position] = await self.wal.append([env])
        return Applied(position.lsn, position.recorded_at or "", env.message_id, env.events, env.lane)

    def quarantined(self) -> list[tuple[int, str]]:
        return [(int(q.error["lsn"]), str(q.error["reason"])) for q in self.log.items()]


@pytest.fixture(params=["memory", "log"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "memory":
        yield _Memory()
        return
    async with open_wal(tmp_path / "wal", SMALL) as wal:
        yield _OnTheLog(wal, tmp_path)


def _seen(items: Sequence[Applied]) -> list[tuple[int, str, tuple[Event, ...]]]:
    return [(i.lsn, i.message_id, tuple(i.events)) for i in items]


async def test_an_unknown_patient_has_no_snapshot_and_no_history(backend: Backend) -> None:
    assert await backend.source.load("H|NOBODY") == (None, [])


async def test_a_patients_history_is_its_own_in_log_order(backend: Backend) -> None:
    first = await backend.add("H|A")
    await backend.add("H|B")
    second = await backend.add("H|A")
    snapshot, history = await backend.source.load("H|A")
    assert snapshot is None
    assert _seen(history) == _seen([first, second])


async def test_after_a_snapshot_only_the_records_it_does_not_hold_are_handed_back(backend: Backend) -> None:
    items = [await backend.add("H|A") for _ in range(20)]  # past what the log's source reads whole at once
    record = PatientRecord.empty("H|A")
    for item in items[:18]:
        record = record.apply(item.lsn, item.recorded_at, item.message_id, list(item.events))
    await backend.source.save(record)
    later = await backend.add("H|A")
    snapshot, history = await backend.source.load("H|A")
    assert snapshot == record
    assert _seen(history) == _seen([*items[18:], later])


async def test_what_load_hands_back_folds_to_the_whole_history(backend: Backend) -> None:
    """A short history may come back whole, its snapshot passed over (invariant 3: the same records, the same fold)."""
    items = [await backend.add("H|A") for _ in range(3)]
    record = PatientRecord.empty("H|A")
    for item in items[:2]:
        record = record.apply(item.lsn, item.recorded_at, item.message_id, list(item.events))
    await backend.source.save(record)
    items.append(await backend.add("H|A"))
    snapshot, history = await backend.source.load("H|A")
    folded = (snapshot or PatientRecord.empty("H|A")).extend(
        (a.lsn, a.recorded_at, a.message_id, a.events) for a in history
    )
    assert folded == PatientRecord.empty("H|A").extend((a.lsn, a.recorded_at, a.message_id, a.events) for a in items)


async def test_a_poison_record_is_quarantined_once_with_its_reason(backend: Backend) -> None:
    item = await backend.add("H|A")
    await backend.quarantine.quarantine("H|A", item, "ValueError in the fold")
    await backend.quarantine.quarantine("H|A", item, "ValueError in the fold")  # every activation fails on it
    assert backend.quarantined() == [(item.lsn, "ValueError in the fold")]
