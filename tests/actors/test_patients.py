"""Virtual patient actors: activation, stash, passivation, LRU, poison records, containment.

The log and the snapshot store are fakes (in memory, with the same contract
the node's implementation has), not mocks. Runs on trio and asyncio; the
idle-timeout test runs on trio's MockClock.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence

import anyio
import msgspec
import pytest
import trio
import trio.testing

from actors.held import HeldFacts
from actors.patients import Applied, PatientActors, apply_record
from actors.record import PatientRecord
from engine.core.model import Coded, DemographicsUpdated, Lane, OrderPlaced, PatientMerged
from tests.harness.memory_actors import MemoryLog, MemoryQuarantine

pytestmark = pytest.mark.anyio


def item(lsn: int, order: str = "") -> Applied:
    return Applied(lsn, f"2026-11-24T08:00:{lsn % 60:02d}Z", f"m{lsn}", (OrderPlaced(order or f"O{lsn}", Coded("X")),))


async def _settle() -> None:
    for _ in range(30):
        await anyio.lowlevel.checkpoint()


async def test_activation_replays_snapshot_and_tail_then_applies_in_order() -> None:
    """First contact activates from snapshot + tail; later records apply in log order."""
    log = MemoryLog()
    log.snapshots["H|A"] = PatientRecord.empty("H|A").apply(1, "t", "m1", [DemographicsUpdated(family="Doe")])
    for lsn in (2, 3):
        log.append("H|A", item(lsn))
    registry = PatientActors(log, MemoryQuarantine())
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        await registry.deliver("H|A", item(4))
        view = await registry.query("H|A")
        assert view.demographics is not None
        assert [o.order_id for o in view.orders] == ["O2", "O3", "O4"]
        assert view.last_lsn == 4
        assert (await registry.query("H|A", known_at_lsn=3)).last_lsn == 3
        assert registry.statistics().activations == 1
        tg.cancel_scope.cancel()


async def test_records_during_activation_wait_in_a_bounded_stash() -> None:
    """While the snapshot loads, records are stashed; a full stash makes delivery wait."""
    log = MemoryLog()
    log.gate = anyio.Event()
    registry = PatientActors(log, MemoryQuarantine(), stash_max=3)
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        for lsn in (1, 2, 3):
            await registry.deliver("H|A", item(lsn))
        assert registry.statistics().activating == 1
        blocked = anyio.Event()

        async def fourth() -> None:
            await registry.deliver("H|A", item(4))
            blocked.set()

        tg.start_soon(fourth)
        await _settle()
        assert not blocked.is_set()  # backpressure, not a drop
        log.gate.set()
        await blocked.wait()
        view = await registry.query("H|A")
        assert [o.order_id for o in view.orders] == ["O1", "O2", "O3", "O4"]
        tg.cancel_scope.cancel()


async def test_lru_passivation_snapshots_and_reactivates() -> None:
    """Above active_max the least recently used actor goes (with a snapshot); it comes back whole."""
    log = MemoryLog()
    registry = PatientActors(log, MemoryQuarantine(), active_max=2)
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        for lsn, patient in enumerate(["H|A", "H|B", "H|C"], start=1):
            log.append(patient, item(lsn))
            await registry.deliver(patient, item(lsn))
            await registry.query(patient)
        stats = registry.statistics()
        assert (stats.active, stats.passivations) == (2, 1)
        assert log.snapshots["H|A"].last_lsn == 1
        view = await registry.query("H|A")  # reactivated from its snapshot
        assert [o.order_id for o in view.orders] == ["O1"]
        tg.cancel_scope.cancel()


class _EncodingLog(MemoryLog):
    """Snapshots kept as bytes, as the node's store keeps them: a saved record holds no fact in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.encoded: dict[str, bytes] = {}

    async def save(self, record: PatientRecord) -> None:
        self.encoded[record.patient] = msgspec.msgpack.encode(record.for_snapshot())


async def test_a_long_record_passivated_is_let_go_a_slice_at_a_time() -> None:
    """Freeing 30,000 facts at once held the loop 20 ms: the loop's other tasks now run between slices of
    them, and every fact is freed all the same."""
    log = _EncodingLog()
    registry = PatientActors(log, MemoryQuarantine(), active_max=1)
    events = tuple(OrderPlaced(f"O{k}", Coded("X")) for k in range(10))
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        for lsn in range(1, 601):  # 6,000 facts
            await registry.deliver("H|LONG", Applied(lsn, "2026-11-24T08:00:00Z", f"m{lsn}", events))
        assert (await registry.query("H|LONG")).last_lsn == 600  # all applied
        record = registry._active["H|LONG"].record
        held = next(iter(record.iter_facts()))
        assert record.fact_count == 6000
        before = sys.getrefcount(held)
        del record
        turns = 0
        going = True

        async def count_turns() -> None:
            nonlocal turns
            while going:
                turns += 1
                await anyio.lowlevel.checkpoint()

        tg.start_soon(count_turns)
        await _settle()
        turns = 0
        await registry.deliver("H|OTHER", item(601))  # the long record is sent away
        while registry.statistics().passivations == 0 or sys.getrefcount(held) >= before:
            await anyio.lowlevel.checkpoint()
        going = False
        assert "H|LONG" in log.encoded  # its snapshot was saved first
        assert sys.getrefcount(held) == before - 1  # the record's reference gone: only this test's is left
        assert turns >= 6000 // 512  # the loop ran between the slices, not once after all of them
        tg.cancel_scope.cancel()


async def test_a_poison_record_is_retried_then_quarantined_and_later_records_go_on() -> None:
    """A record that fails max_attempts times goes to quarantine; the patient's next records apply."""
    quarantine = MemoryQuarantine()

    def fold(record: PatientRecord, applied: Applied) -> PatientRecord:
        if applied.lsn == 2:
            raise ValueError("cannot apply")
        return apply_record(record, applied)

    registry = PatientActors(MemoryLog(), quarantine, max_attempts=3, fold=fold)
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        for lsn in (1, 2, 3):
            await registry.deliver("H|A", item(lsn))
        view = await registry.query("H|A")
        assert [o.order_id for o in view.orders] == ["O1", "O3"]
        assert quarantine.items == [("H|A", 2, "ValueError: cannot apply")]
        assert registry.statistics().restarts == 2  # two crashes, the third attempt quarantines
        tg.cancel_scope.cancel()


async def test_a_transient_failure_restarts_from_the_last_good_state() -> None:
    """A record that fails once applies on the retry: nothing quarantined, nothing lost."""
    failures = {2: 1}

    def fold(record: PatientRecord, applied: Applied) -> PatientRecord:
        if failures.get(applied.lsn, 0) > 0:
            failures[applied.lsn] -= 1
            raise RuntimeError("transient")
        return apply_record(record, applied)

    quarantine = MemoryQuarantine()
    registry = PatientActors(MemoryLog(), quarantine, fold=fold)
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        for lsn in (1, 2, 3):
            await registry.deliver("H|A", item(lsn))
        assert [o.order_id for o in (await registry.query("H|A")).orders] == ["O1", "O2", "O3"]
        assert quarantine.items == []
        tg.cancel_scope.cancel()


async def test_one_patients_crash_never_touches_another() -> None:
    """Patient A's poison record: patient B's records all apply, in order."""

    def fold(record: PatientRecord, applied: Applied) -> PatientRecord:
        if record.patient == "H|A":
            raise ValueError("poison")
        return apply_record(record, applied)

    registry = PatientActors(MemoryLog(), MemoryQuarantine(), max_attempts=2, fold=fold)
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        for lsn in range(1, 41):
            await registry.deliver("H|A" if lsn % 4 == 0 else "H|B", item(lsn))
        view = await registry.query("H|B")
        assert [o.order_id for o in view.orders] == [f"O{n}" for n in range(1, 41) if n % 4]
        tg.cancel_scope.cancel()


async def test_a_failed_activation_fails_the_query_and_the_next_contact_retries() -> None:
    """The snapshot store failing: the waiting query gets the error; the log still has everything."""
    log = MemoryLog()
    log.append("H|A", item(1))
    log.fail_next_load = OSError("snapshot store unreachable")
    registry = PatientActors(log, MemoryQuarantine())
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        with pytest.raises(OSError, match="unreachable"):
            await registry.query("H|A")
        view = await registry.query("H|A")
        assert [o.order_id for o in view.orders] == ["O1"]
        tg.cancel_scope.cancel()


def test_idle_actors_are_passivated_after_the_timeout() -> None:
    """Deterministic time: idle past idle_timeout_s, the actor goes and leaves a snapshot.

    Its record goes at once too: the entry and its actor form a reference cycle, and the
    record must not wait for a cyclic collection that an idle node may not run for long.
    """

    async def scenario() -> tuple[int, int, int, int, int]:
        log = MemoryLog()
        registry = PatientActors(log, MemoryQuarantine(), idle_timeout_s=60)
        async with trio.open_nursery() as nursery:
            await nursery.start(registry.run)
            log.append("H|A", item(1))
            await registry.deliver("H|A", item(1))
            await registry.query("H|A")
            entry = registry._active["H|A"]  # the entry a cycle would keep alive
            held = len(entry.record.facts)
            await trio.sleep(30)
            active_early = registry.statistics().active
            await trio.sleep(61)
            stats = registry.statistics()
            nursery.cancel_scope.cancel()
        return active_early, stats.active, log.snapshots["H|A"].last_lsn, held, len(entry.record.facts)

    assert trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0)) == (1, 0, 1, 1, 0)


async def test_a_patient_holding_a_critical_record_takes_the_next_turn() -> None:
    """Priority inheritance: with every turn slot busy, the critical patient's turn goes before the batch ones."""
    order: list[str] = []

    def fold(record: PatientRecord, applied: Applied) -> PatientRecord:
        order.append(record.patient)
        return apply_record(record, applied)

    log = MemoryLog()
    registry = PatientActors(log, MemoryQuarantine(), turns_max=1, fold=fold)
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        for name in ("H|X", *(f"H|B{i}" for i in range(5)), "H|C"):
            await registry.query(name)  # activate them all first
        await registry.gate.acquire(0)  # hold the only turn
        for i in range(5):
            await registry.deliver(f"H|B{i}", Applied(10 + i, "t", f"b{i}", (), Lane.BATCH))
        await registry.deliver("H|C", Applied(20, "t", "c", (), Lane.CRITICAL))
        await _settle()
        assert order == []  # every turn waits for the gate
        registry.gate.release()
        await _settle()
        assert order[0] == "H|C"
        assert sorted(order[1:]) == [f"H|B{i}" for i in range(5)]
        tg.cancel_scope.cancel()


def test_activation_under_load_is_bounded() -> None:
    """1,000 patients at once, activations_max 8: never more than 8 loads at a time, every record applied."""

    class SlowLog(MemoryLog):
        def __init__(self) -> None:
            super().__init__()
            self.now_loading = 0
            self.most_loading = 0

        async def load(self, patient: str) -> tuple[PatientRecord | None, Sequence[Applied]]:
            self.now_loading += 1
            self.most_loading = max(self.most_loading, self.now_loading)
            await trio.sleep(0.05)
            self.now_loading -= 1
            return await super().load(patient)

    async def scenario() -> tuple[int, int, int]:
        log = SlowLog()
        registry = PatientActors(log, MemoryQuarantine(), activations_max=8)
        async with trio.open_nursery() as nursery:
            await nursery.start(registry.run)
            for n in range(1000):
                await registry.deliver(f"H|{n}", item(n + 1))
            views = [await registry.query(f"H|{n}") for n in range(1000)]
            nursery.cancel_scope.cancel()
        return log.most_loading, sum(len(v.orders) for v in views), registry.statistics().activations

    assert trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0)) == (8, 1000, 1000)


async def test_a_record_with_few_new_records_is_not_snapshotted_but_comes_back_whole() -> None:
    """Below snapshot_min_records a passivation writes nothing: the log gives the record back."""
    log = MemoryLog()
    registry = PatientActors(log, MemoryQuarantine(), active_max=1, snapshot_min_records=3)
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        for lsn, patient in ((1, "H|A"), (2, "H|B"), (3, "H|A"), (4, "H|B"), (5, "H|A"), (6, "H|B")):
            log.append(patient, item(lsn))
            await registry.deliver(patient, item(lsn))
            await registry.query(patient)
            if lsn <= 4:
                assert log.snapshots == {}  # each passivated with one or two records since none
        assert log.snapshots["H|A"].last_lsn == 5  # three records folded since no snapshot: now one
        view = await registry.query("H|A")
        assert [o.order_id for o in view.orders] == ["O1", "O3", "O5"]
        tg.cancel_scope.cancel()


async def test_a_record_that_absorbed_a_merged_history_is_snapshotted_though_one_record_came() -> None:
    """What a reactivation would rebuild counts, not records: else each one reads the merged history again."""
    log = MemoryLog()
    for lsn in (1, 2, 3):
        log.append("H|OLD", item(lsn))
    merge = Applied(4, "2026-11-24T09:00:00Z", "m4", (PatientMerged("H|NEW", "H|OLD"),))
    log.append("H|NEW", merge)
    registry = PatientActors(log, MemoryQuarantine(), active_max=1, snapshot_min_records=3)
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        await registry.deliver("H|NEW", merge)
        await registry.query("H|NEW")
        log.append("H|X", item(5))
        await registry.deliver("H|X", item(5))  # H|NEW is passivated to make room
        await registry.query("H|X")
        assert log.snapshots["H|NEW"].merged_from == ("H|OLD",)
        tg.cancel_scope.cancel()


async def test_a_merge_of_a_patient_already_absorbed_reads_no_history() -> None:
    """A repeated A40 (a resend, a replay) costs nothing: the merged patient's history is not read again."""
    log = MemoryLog()
    first = Applied(3, "2026-11-24T09:00:00Z", "m3", (PatientMerged("H|NEW", "H|OLD"),))
    again = Applied(5, "2026-11-24T10:00:00Z", "m5", (PatientMerged("H|NEW", "H|OLD"),))
    log.append("H|OLD", item(1, "OLD-ORDER"))
    for merge in (first, again):
        log.append("H|NEW", merge)
        log.append("H|OLD", merge)
    registry = PatientActors(log, MemoryQuarantine())
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        await registry.deliver("H|NEW", first)
        await registry.query("H|NEW")
        loads = log.loads
        await registry.deliver("H|NEW", again)
        view = await registry.query("H|NEW")
        assert log.loads == loads  # the second merge read nothing from the log
        assert view.merged_from == ("H|OLD",)
        assert [o.order_id for o in view.orders] == ["OLD-ORDER"]
        tg.cancel_scope.cancel()


async def test_a_merge_brings_the_merged_patients_history_with_provenance() -> None:
    """A40: the survivor's record absorbs the merged patient's history from the log."""
    log = MemoryLog()
    old, new = item(1, "OLD-ORDER"), item(2, "NEW-ORDER")
    merge = Applied(3, "2026-11-24T09:00:00Z", "m3", (PatientMerged("H|NEW", "H|OLD"),))
    log.append("H|OLD", old)
    log.append("H|NEW", new)
    log.append("H|NEW", merge)
    log.append("H|OLD", merge)
    registry = PatientActors(log, MemoryQuarantine())
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        await registry.deliver("H|NEW", new)
        await registry.deliver("H|NEW", merge)
        view = await registry.query("H|NEW")
        assert view.merged_from == ("H|OLD",)
        assert [o.order_id for o in view.orders] == ["OLD-ORDER", "NEW-ORDER"]  # in log order
        tg.cancel_scope.cancel()


async def test_the_record_now_is_folded_once_until_it_changes() -> None:
    """Reading the record now again returns the same fold; a new record, or a moment asked for, folds anew."""
    log = MemoryLog()
    registry = PatientActors(log, MemoryQuarantine())
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        await registry.deliver("H|A", item(1))
        first = await registry.query("H|A")
        assert await registry.query("H|A") is first  # kept, not folded again
        assert (await registry.query("H|A", known_at_lsn=1)) is not first
        await registry.deliver("H|A", item(2))
        now = await registry.query("H|A")
        assert [o.order_id for o in now.orders] == ["O1", "O2"]
        assert now.last_lsn == 2
        tg.cancel_scope.cancel()


# -- activation without a task, when the state is at hand -------------------------------------


async def test_a_patient_whose_state_is_at_hand_is_activated_at_once_and_folds_the_same() -> None:
    """A first-seen patient (no snapshot, a record just written): active before `deliver` returns, same record."""
    log = MemoryLog()
    log.at_hand = True
    log.snapshots["H|B"] = PatientRecord.empty("H|B").apply(1, "t", "m1", [DemographicsUpdated(family="Doe")])
    for lsn in (2, 3):
        log.append("H|A", item(lsn))
        log.append("H|B", item(lsn))
    registry = PatientActors(log, MemoryQuarantine())
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        for patient in ("H|A", "H|B"):
            await registry.deliver(patient, item(4))
            assert registry.statistics().active == registry.statistics().activations  # no activation pending
            assert registry.statistics().activating == 0
        assert [o.order_id for o in (await registry.query("H|A")).orders] == ["O2", "O3", "O4"]
        b = await registry.query("H|B")
        assert b.demographics is not None
        assert [o.order_id for o in b.orders] == ["O2", "O3", "O4"]
        tg.cancel_scope.cancel()


async def test_state_at_hand_with_a_merge_or_a_poison_record_goes_the_usual_way() -> None:
    """A merge into the patient needs the merged history; a poison record needs skipping and quarantine."""
    log = MemoryLog()
    log.at_hand = True
    log.append("H|OLD", item(1))
    log.append("H|NEW", Applied(2, "2026-11-24T09:00:00Z", "m2", (PatientMerged("H|NEW", "H|OLD"),)))
    log.append("H|P", item(3))
    quarantine = MemoryQuarantine()

    def fold(record: PatientRecord, applied: Applied) -> PatientRecord:
        if applied.lsn == 3:
            raise ValueError("cannot apply")
        return apply_record(record, applied)

    registry = PatientActors(log, quarantine, max_attempts=1, fold=fold)
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        await registry.deliver("H|NEW", item(4))
        assert registry.statistics().activating == 1  # loading the usual way, in a task of its own
        new = await registry.query("H|NEW")
        assert new.merged_from == ("H|OLD",)
        assert [o.order_id for o in new.orders] == ["O1", "O4"]
        await registry.deliver("H|P", item(5))
        assert [o.order_id for o in (await registry.query("H|P")).orders] == ["O5"]
        assert quarantine.items == [("H|P", 3, "ValueError: cannot apply")]
        tg.cancel_scope.cancel()


async def test_state_at_hand_with_no_room_sends_the_least_recently_used_away_without_waiting() -> None:
    """The sender does not wait for the old actor to drain and stop; with too many on their way out, it does."""
    log = MemoryLog()
    log.at_hand = True
    registry = PatientActors(log, MemoryQuarantine(), active_max=2, activations_max=1)
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        for lsn, patient in enumerate(("H|A", "H|B", "H|C"), 1):
            await registry.deliver(patient, item(lsn))
            assert registry.statistics().activating == 0
        assert registry.statistics().active == 3  # H|A on its way out: passivated by its own task
        await registry.deliver("H|D", item(4))  # one already leaving, activations_max 1: the usual way
        assert registry.statistics().activating == 1
        assert [o.order_id for o in (await registry.query("H|D")).orders] == ["O4"]
        assert [o.order_id for o in (await registry.query("H|A")).orders] == ["O1"]  # back, whole
        assert registry.statistics().passivations >= 2
        assert registry.statistics().active <= 2
        tg.cancel_scope.cancel()


async def test_a_record_folded_at_activation_starts_no_actor_task_until_a_message_it_has_not_folded() -> None:
    """A patient seen once (a third of a hospital's messages) costs no task: the next record or a read starts one."""
    log = MemoryLog()
    log.at_hand = True
    registry = PatientActors(log, MemoryQuarantine())
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        await _settle()
        tasks = len(anyio.get_running_tasks())
        for lsn in range(1, 51):
            log.append(f"H|{lsn}", item(lsn))  # durable before it is handed on, as in the node
            await registry.deliver(f"H|{lsn}", item(lsn))
            assert log.in_hand == item(lsn)  # the source was given the record, to spare a read
        await _settle()
        assert len(anyio.get_running_tasks()) == tasks
        assert registry.statistics().active == registry.statistics().activations == 50
        log.append("H|7", item(51))
        await registry.deliver("H|7", item(51))
        assert [o.order_id for o in (await registry.query("H|7")).orders] == ["O7", "O51"]
        assert [o.order_id for o in (await registry.query("H|8")).orders] == ["O8"]
        await _settle()
        assert len(anyio.get_running_tasks()) == tasks + 2
        tg.cancel_scope.cancel()


async def test_an_actor_that_never_ran_is_passivated_at_once_or_by_its_task_when_a_snapshot_is_due() -> None:
    """No snapshot due: it goes at once and comes back whole from the log; one due: it is written first."""
    log = MemoryLog()
    log.at_hand = True
    registry = PatientActors(log, MemoryQuarantine(), active_max=2, snapshot_min_records=2)
    two_facts = Applied(
        3, "2026-11-24T08:00:03Z", "m3", (OrderPlaced("O3a", Coded("X")), OrderPlaced("O3b", Coded("X")))
    )
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        for patient, applied in (("H|A", item(1)), ("H|B", item(2)), ("H|C", two_facts), ("H|D", item(4))):
            log.append(patient, applied)
            await registry.deliver(patient, applied)
        assert registry.statistics().passivations == 2  # H|A, then H|B: gone at once, with nothing to write
        assert log.snapshots == {}
        log.append("H|E", item(5))
        await registry.deliver("H|E", item(5))  # H|C goes: its two facts are worth a snapshot, written by a task
        await _settle()
        assert registry.statistics().passivations == 3
        assert set(log.snapshots) == {"H|C"}
        assert log.snapshots["H|C"].last_lsn == 3
        assert registry.statistics().active == 2
        assert [o.order_id for o in (await registry.query("H|A")).orders] == ["O1"]  # back, whole
        assert [o.order_id for o in (await registry.query("H|C")).orders] == ["O3a", "O3b"]
        tg.cancel_scope.cancel()


async def test_a_merge_of_an_active_patient_takes_its_record_from_its_actor_not_the_log() -> None:
    """Its history is not read back (a heavy patient is active, so never snapshotted): the same record results."""
    log = MemoryLog()
    for lsn in (1, 2, 3):
        log.append("H|OLD", item(lsn))
    merge = Applied(5, "2026-11-24T09:00:00Z", "m5", (PatientMerged("H|NEW", "H|OLD"),))
    registry = PatientActors(log, MemoryQuarantine())
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        for lsn in (1, 2, 3):
            await registry.deliver("H|OLD", item(lsn))
        assert [o.order_id for o in (await registry.query("H|OLD")).orders] == ["O1", "O2", "O3"]
        log.append("H|OLD", item(4))  # in the log, not yet with the actor: read after what it holds
        loads = log.loads
        await registry.deliver("H|NEW", merge)
        new = await registry.query("H|NEW")
        assert [o.order_id for o in new.orders] == ["O1", "O2", "O3", "O4"]
        assert new.merged_from == ("H|OLD",)
        assert log.loads == loads + 1  # H|NEW's own activation; H|OLD's history was not loaded
        assert log.tails == 1
        await registry.deliver("H|OLD", item(4))
        await registry.deliver("H|OLD", item(6))
        await registry.deliver("H|OLD", item(8))  # past the next merge: cut back to it, from memory
        await registry.query("H|OLD")
        again = Applied(7, "2026-11-24T10:00:00Z", "m7", (PatientMerged("H|NEWER", "H|OLD"),))
        await registry.deliver("H|NEWER", again)
        assert [o.order_id for o in (await registry.query("H|NEWER")).orders] == ["O1", "O2", "O3", "O4", "O6"]
        assert log.tails == 1
        tg.cancel_scope.cancel()


def _held(record: PatientRecord) -> PatientRecord:
    """`record` as the node reads back a long snapshot: every fact held as bytes."""
    held = HeldFacts.of_array(msgspec.msgpack.encode(record.facts))
    return PatientRecord(record.patient, last_lsn=record.last_lsn, merged_from=record.merged_from, held=held)


def _decodes_seen(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Where each decode of held facts ran: "loop" (the test's event loop thread) or "worker"."""
    seen: list[str] = []
    decode = HeldFacts.decode

    def spy(self: HeldFacts) -> tuple[object, ...]:
        seen.append("loop" if threading.current_thread() is threading.main_thread() else "worker")
        return decode(self)

    monkeypatch.setattr(HeldFacts, "decode", spy)
    return seen


async def test_a_held_record_is_decoded_only_when_read_off_the_loop_and_then_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A long record back for new messages decodes none of its history; the first read decodes it once,
    in a worker thread, and later reads use the decoded record."""
    log = MemoryLog()
    log.snapshots["H|A"] = _held(
        PatientRecord.empty("H|A").extend(
            (i.lsn, i.recorded_at, i.message_id, i.events) for i in map(item, range(1, 51))
        )
    )
    seen = _decodes_seen(monkeypatch)
    registry = PatientActors(log, MemoryQuarantine())
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        for lsn in (51, 52):
            log.append("H|A", item(lsn))
            await registry.deliver("H|A", item(lsn))
        await _settle()
        assert seen == []  # applied without reading the history
        view = await registry.query("H|A")
        assert [o.order_id for o in view.orders] == [f"O{n}" for n in range(1, 53)]
        assert (await registry.query("H|A", known_at_lsn=10)).last_lsn == 10
        assert seen == ["worker"]  # once, off the loop
        tg.cancel_scope.cancel()


async def test_a_merge_with_held_records_brings_the_history_decoded_off_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = MemoryLog()
    old = [item(lsn, f"OLD{lsn}") for lsn in range(1, 6)]
    merge = Applied(9, "2026-11-24T09:00:00Z", "m9", (PatientMerged("H|NEW", "H|OLD"),))
    fold = PatientRecord.empty
    log.snapshots["H|OLD"] = _held(fold("H|OLD").extend((i.lsn, i.recorded_at, i.message_id, i.events) for i in old))
    log.snapshots["H|NEW"] = _held(fold("H|NEW").apply(7, "2026-11-24T08:30:00Z", "m7", item(7, "NEW7").events))
    log.append("H|NEW", merge)
    log.append("H|OLD", merge)
    seen = _decodes_seen(monkeypatch)
    registry = PatientActors(log, MemoryQuarantine())
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        await registry.deliver("H|NEW", merge)
        view = await registry.query("H|NEW")
        assert view.merged_from == ("H|OLD",)
        assert [o.order_id for o in view.orders] == ["OLD1", "OLD2", "OLD3", "OLD4", "OLD5", "NEW7"]
        assert seen
        assert set(seen) == {"worker"}
        tg.cancel_scope.cancel()
