"""Patient actors over the real stores: activation from snapshot + log tail, poison records quarantined once."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from actors import Applied, PatientActors, PatientRecord
from engine.core.decode import Decoder
from engine.core.feedgen import generate_feed
from engine.node.record_source import LogRecordSource, PoisonQuarantine
from engine.wal import open_wal
from engine.wal.files import OSFiles
from engine.wal.quarantine import Quarantine
from engine.wal.snapshots import SnapshotStore

pytestmark = pytest.mark.anyio


async def test_snapshot_plus_log_tail_equals_a_full_replay(tmp_path: Path) -> None:
    """Invariant 3 through the real log and snapshot store: after passivation and reactivation, the same record."""
    decoder = Decoder()
    envelopes = [decoder.hl7(raw, received_at="t", source="s") for raw in generate_feed(300, seed=12, patients=3)]
    snapshots = SnapshotStore(tmp_path / "snapshots", OSFiles())
    async with open_wal(tmp_path / "wal") as wal, anyio.create_task_group() as tg:
        registry = PatientActors(
            LogRecordSource(wal, snapshots), PoisonQuarantine(wal, Quarantine(tmp_path, OSFiles())), active_max=1
        )
        await tg.start(registry.run)
        for i, env in enumerate(envelopes):
            [position] = await wal.append([env])
            assert env.patient is not None
            assert position.recorded_at is not None
            applied = Applied(position.lsn, position.recorded_at, env.message_id, env.events, env.lane)
            await registry.deliver(env.patient, applied)
            if i % 50 == 49:
                await registry.query(envelopes[(i * 7) % len(envelopes)].patient or "")  # churn: LRU passivation
        patients = sorted({e.patient for e in envelopes if e.patient})
        views = {p: await registry.query(p) for p in patients}
        assert registry.statistics().passivations > 3
        for patient in patients:
            full = PatientRecord.empty(patient)
            for record in wal.read_patient(patient):
                full = full.apply(record.lsn, record.recorded_at, record.message_id, record.envelope.events)
            assert full.view() == views[patient]
        tg.cancel_scope.cancel()
    assert any(snapshots.load(p) is not None for p in patients)


async def test_a_poison_record_lands_in_quarantine_once_with_its_bytes(tmp_path: Path) -> None:
    """The poison record is quarantined with its original bytes; reactivations do not add it again."""
    decoder = Decoder()
    [env] = [decoder.hl7(raw, received_at="t", source="s") for raw in generate_feed(1, seed=3)]
    assert env.patient is not None
    quarantine = Quarantine(tmp_path / "q", OSFiles())

    def fold(record: PatientRecord, applied: Applied) -> PatientRecord:
        raise ValueError("cannot apply")

    async with open_wal(tmp_path / "wal") as wal, anyio.create_task_group() as tg:
        sink = PoisonQuarantine(wal, quarantine)
        registry = PatientActors(
            LogRecordSource(wal, SnapshotStore(tmp_path / "s", OSFiles())), sink, max_attempts=2, fold=fold
        )
        await tg.start(registry.run)
        [position] = await wal.append([env])
        await registry.deliver(env.patient, Applied(position.lsn, "t", env.message_id, env.events))
        await registry.query(env.patient)
        await sink.quarantine(env.patient, Applied(position.lsn, "t", env.message_id, ()), "again")
        tg.cancel_scope.cancel()
    [item] = quarantine.items()
    assert item.raw == env.raw
    assert item.error["lsn"] == 1
