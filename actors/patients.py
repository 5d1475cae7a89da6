"""Virtual patient actors: one per patient, activated on demand, passivated when idle.

A patient's actor owns its `PatientRecord` and applies that patient's log
records in log order. It exists only while needed:

- **activation** on the first record or query: state from the newest
  snapshot plus the log tail after it (through `RecordSource`, which the node
  implements), at most `activations_max` at a time; records that arrive
  meanwhile wait in a bounded stash (a full stash makes `deliver` wait);
- **passivation** after `idle_timeout_s` without traffic, or when more than
  `active_max` actors are active (least recently used first): a snapshot is
  saved if the record moved since the last one, and the actor goes away;
- **priority inheritance**: patient turns share a `TurnGate` (`turns_max` at
  once); a patient whose mailbox holds a critical record takes the next free
  turn ahead of patients holding only standard or batch records;
- **merges** (A40/A34): the surviving patient's record absorbs the merged
  patient's history (read from the log, not asked of its actor), every fact
  keeping its provenance;
- **poison messages**: a record whose application fails crashes the actor;
  it is restarted from its last good state (the record is immutable: the
  state before the failing record) and the record is tried again, up to
  `max_attempts`; then it goes to quarantine (through `Quarantine`) with the
  error summary, and the patient's later records go on.

Crashes are contained: one patient's failure never touches another's actor.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, final

import anyio
import anyio.lowlevel
import msgspec
import structlog
from anyio.abc import TaskGroup, TaskStatus

from actors.actor import Actor, Behavior, Reply
from actors.clock import loop_clock
from actors.record import Fact, PatientRecord, RecordView
from actors.turns import TurnGate
from engine.core.model import Event, Lane, PatientMerged

__all__ = ["Applied", "PatientActors", "PatientStatistics", "Quarantine", "RecordSource", "apply_record"]

_log = structlog.get_logger("vigil.patients")

# A record let go frees all its facts at once, and the loop waits: 20 ms for 30,000 facts, in front of every
# critical message. A longer one is freed a slice of facts at a time, the loop's other work between slices.
_FREED_AT_ONCE_MAX = 2048
_FREED_SLICE = 512


@final
class Applied(msgspec.Struct, frozen=True):
    """One durable log record, as a patient actor applies it."""

    lsn: int
    recorded_at: str
    message_id: str
    events: tuple[Event, ...]
    lane: Lane = Lane.STANDARD

    def merges_into(self, patient: str) -> bool:
        """Whether the record merges another patient into `patient` (bringing that one's history)."""
        return any(isinstance(e, PatientMerged) and e.surviving == patient for e in self.events)


def apply_record(record: PatientRecord, item: Applied) -> PatientRecord:
    """The fold step: one log record into the patient's record."""
    return record.apply(item.lsn, item.recorded_at, item.message_id, item.events)


class RecordSource(Protocol):
    """What activation and passivation need from the node (the log and the snapshot store)."""

    async def load(self, patient: str) -> tuple[PatientRecord | None, Sequence[Applied]]:
        """The newest snapshot (or None) and every record of the patient after it.

        A source may pass over the snapshot and hand back the whole history, when that is at hand
        and cheaper: the fold of either is the same record (invariant 3).
        """
        ...

    def load_now(
        self, patient: str, in_hand: Applied | None = None
    ) -> tuple[PatientRecord | None, Sequence[Applied]] | None:
        """What `load` gives, when it is at hand without waiting (a patient seen for the first time); else None.

        `in_hand`: a durable record of the patient being handed on now; a source may give it back
        instead of reading it, when it knows that record is the patient's whole history.
        """
        ...

    async def load_after(self, patient: str, after_lsn: int) -> Sequence[Applied]:
        """Every record of the patient after `after_lsn` (a record held in memory, caught up)."""
        ...

    async def save(self, record: PatientRecord) -> None:
        """Keep a snapshot of the record."""
        ...


class Quarantine(Protocol):
    """Where a poison record goes."""

    async def quarantine(self, patient: str, item: Applied, reason: str) -> None: ...


@final
class _Query(msgspec.Struct, frozen=True):
    known_at_lsn: int | None
    known_at: str | None
    as_of: str | None
    reply: Reply[RecordView]


@final
class _Keep(msgspec.Struct, frozen=True):
    """Snapshot the record now, whatever it gained (retention, before the log lets its records go)."""

    reply: Reply[int]


_Message = Applied | _Query | _Keep


def _urgency(mailbox: Iterable[_Message]) -> int:
    """The most urgent lane in a mailbox (0 critical, 1 standard, 2 batch); a query is standard, a snapshot batch."""
    best = 2
    for message in mailbox:
        rank = message.lane.rank if isinstance(message, Applied) else 2 if isinstance(message, _Keep) else 1
        if rank < best:
            best = rank
            if best == 0:
                break
    return best


@final
class PatientStatistics(msgspec.Struct, frozen=True):
    """A snapshot of the registry's counters."""

    active: int
    activating: int
    activations: int
    passivations: int
    restarts: int
    quarantined: int


@final
class _Patient:
    """One patient's actor: its record, its attempts at the current record, its mailbox."""

    def __init__(self, registry: PatientActors, patient: str, record: PatientRecord) -> None:
        self.registry = registry
        self.patient = patient
        self.record = record
        self.snapshot_lsn = record.last_lsn
        # Facts the snapshot holds: what the record gained since (its tail, new records, a merged-in history) is
        # what a reactivation would rebuild without a new snapshot.
        self.snapshot_facts = record.fact_count
        self.attempts = 0
        self.unapplied: list[_Message] = []
        # Made, with its task, when the first message comes that the activation did not fold in
        # (`PatientActors._run`): a patient seen once never needs either.
        self.actor: Actor[_Message] | None = None
        self.last_used = registry.now()
        self.closing: anyio.Event | None = None  # set while passivating: senders wait, then reactivate
        # The record as it stands now, folded once and kept until the record changes: a record read
        # again and again (an EHR polling one patient) costs a lookup, not a fold of all its facts.
        self.now_view: RecordView | None = None

    async def behave(self, messages: list[_Message]) -> None:
        for i, message in enumerate(messages):
            if isinstance(message, _Query):
                try:
                    self.record = await _unheld(self.record)  # kept decoded: the next read costs a fold at most
                except Exception as exc:  # noqa: BLE001 -- told to the asker; the record and the log are unharmed
                    _log.error("patients.held_facts_unreadable", error=type(exc).__name__)
                    message.reply.fail(exc)
                    continue
                message.reply.set(self._view(message))
                continue
            if isinstance(message, _Keep):
                await self._keep(message.reply)
                continue
            try:
                self.now_view = None
                self.record = await self.registry.apply(self.record, message)
            except Exception as exc:
                self.attempts += 1
                if self.attempts < self.registry.max_attempts:
                    self.unapplied = messages[i:]
                    raise
                await self.registry.poisoned(self.patient, message, exc)
            self.attempts = 0

    async def _keep(self, reply: Reply[int]) -> None:
        if self.record.last_lsn > self.snapshot_lsn:
            try:
                await self.registry.save_snapshot(self.record)
            except Exception as exc:  # noqa: BLE001 -- told to the asker: the record itself is unharmed
                reply.fail(exc)
                return
            self.snapshot_lsn, self.snapshot_facts = self.record.last_lsn, self.record.fact_count
        reply.set(self.snapshot_lsn)

    def _view(self, query: _Query) -> RecordView:
        if query.known_at_lsn is not None or query.known_at is not None or query.as_of is not None:
            return self.record.view(known_at_lsn=query.known_at_lsn, known_at=query.known_at, as_of=query.as_of)
        if self.now_view is None:
            self.now_view = self.record.view()
        return self.now_view


@final
class PatientActors:
    """The registry of virtual patient actors; run it with `await tg.start(registry.run)`."""

    def __init__(
        self,
        source: RecordSource,
        quarantine: Quarantine,
        *,
        active_max: int = 10_000,
        idle_timeout_s: float = 300.0,
        activations_max: int = 64,
        stash_max: int = 256,
        mailbox_max: int = 256,
        max_attempts: int = 3,
        turns_max: int = 64,
        snapshot_min_records: int = 1,
        fold: Callable[[PatientRecord, Applied], PatientRecord] | None = None,
    ) -> None:
        bounds = (active_max, activations_max, stash_max, mailbox_max, max_attempts, snapshot_min_records)
        if min(bounds) < 1 or idle_timeout_s <= 0:
            raise ValueError("every bound must be positive")
        self._source = source
        self._quarantine = quarantine
        self.active_max = active_max
        # A passivated record is snapshotted only when rebuilding what it gained would cost more than writing it.
        self.snapshot_min_records = snapshot_min_records
        self.idle_timeout_s = idle_timeout_s
        self.stash_max = stash_max
        self.mailbox_max = mailbox_max
        self.max_attempts = max_attempts
        self.fold = fold if fold is not None else apply_record
        # Patient turns share a gate: a patient holding a critical record goes first.
        self.gate = TurnGate(turns_max)
        self._active: OrderedDict[str, _Patient] = OrderedDict()  # least recently used first
        self._passivating = 0  # of those, being passivated (counted, so making room is not a scan of them all)
        self._stashes: dict[str, list[_Message]] = {}
        self._activated: dict[str, anyio.Event] = {}
        self._room: dict[str, anyio.Event] = {}
        self._limiter = anyio.CapacityLimiter(activations_max)
        self._tg: TaskGroup | None = None
        self._activations = self._passivations = self._restarts = self._quarantined = 0
        self.now: Callable[[], float] = anyio.current_time  # the loop's clock, resolved once `run` runs

    def new_actor(self, behave: Behavior[_Message], capacity: int) -> Actor[_Message]:
        return Actor(behave, capacity=capacity, name="patient", gate=self.gate, priority=_urgency)

    # -- the public face ------------------------------------------------------------

    async def deliver(self, patient: str, item: Applied) -> None:
        """Hand a durable record to its patient's actor (activating it if needed)."""
        await self._send(patient, item)

    async def query(
        self,
        patient: str,
        *,
        known_at_lsn: int | None = None,
        known_at: str | None = None,
        as_of: str | None = None,
        timeout_s: float = 10.0,
    ) -> RecordView:
        """The patient's record (now, as known at, as of), asked of its actor.

        Raises:
            TimeoutError: the actor did not answer in time.
        """
        reply: Reply[RecordView] = Reply()
        with anyio.fail_after(timeout_s):
            await self._send(patient, _Query(known_at_lsn, known_at, as_of, reply))
            return await reply.wait()

    async def keep_snapshot(self, patient: str, *, timeout_s: float = 30.0) -> int:
        """Snapshot the patient's record as its actor holds it now (activating it if needed); its LSN.

        For retention: a segment leaves the log only once every patient in it
        has a snapshot past it. Goes behind the patient's other work, as batch.

        Raises:
            TimeoutError: the actor did not answer in time.
            Exception: the snapshot could not be saved.
        """
        reply: Reply[int] = Reply()
        with anyio.fail_after(timeout_s):
            await self._send(patient, _Keep(reply))
            return await reply.wait()

    async def save_snapshot(self, record: PatientRecord) -> None:
        await self._source.save(record)

    def statistics(self) -> PatientStatistics:
        return PatientStatistics(
            len(self._active),
            len(self._stashes),
            self._activations,
            self._passivations,
            self._restarts,
            self._quarantined,
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own every patient actor and the passivation sweep, until cancelled."""
        self.now = loop_clock()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._sweep)
            task_status.started()

    # -- delivery and activation --------------------------------------------------------

    async def _send(self, patient: str, message: _Message) -> None:
        while True:
            entry = self._active.get(patient)
            if entry is not None:
                if entry.closing is not None:
                    await entry.closing.wait()  # being passivated: then activated afresh
                    continue
                self._active.move_to_end(patient)
                entry.last_used = self.now()
                actor = entry.actor if entry.actor is not None else self._run(entry)
                await actor.tell(message)
                return
            stash = self._stashes.get(patient)
            if stash is None and (entry := self._activate_now(patient, message)) is not None:
                if isinstance(message, Applied) and message.lsn <= entry.record.last_lsn:
                    return  # folded in by the activation: the actor would ignore it, so it need not run yet
                continue  # active now: the message goes to its mailbox
            if stash is None:
                self._stashes[patient] = [message]
                self._activated[patient] = anyio.Event()
                assert self._tg is not None, "PatientActors.run is not running"
                self._tg.start_soon(self._activate, patient)
                return
            if len(stash) < self.stash_max:
                stash.append(message)
                return
            # The stash is full: wait for the activation, then go on (backpressure).
            await self._activated[patient].wait()

    def _activate_now(self, patient: str, message: _Message) -> _Patient | None:
        """Activate without a task of its own when the state is at hand and there is room; None otherwise.

        A patient seen for the first time is most of a hospital's activations (a third of its messages
        can be for patients never seen before), and its state is nothing or a record just written. A task
        per activation, its cancel scope and the limiter's checkpoint made such a message cost 1.4-1.6 x a
        known patient's. Its actor and the actor's task wait for a message the fold has not taken in
        (`_run`); the record being handed on is passed to the source, which need not read it back. A tail
        that needs more than the fold (a merge into this patient, a poison record) goes the usual way.
        """
        full = len(self._active) - self._passivating >= self.active_max
        if full and self._passivating >= self._limiter.total_tokens:
            return None  # so many on their way out already: wait for room the usual way
        at_hand = self._source.load_now(patient, message if isinstance(message, Applied) else None)
        if at_hand is None:
            return None
        snapshot, tail = at_hand
        if any(item.merges_into(patient) for item in tail):
            return None
        entry = _Patient(self, patient, snapshot if snapshot is not None else PatientRecord.empty(patient))
        try:
            entry.record = self._fold_all(entry.record, tail)  # the entry knows what its snapshot holds
        except Exception:  # noqa: BLE001 -- a poison record: the usual activation skips and quarantines it
            return None
        if full:
            self._close(next(e for e in self._active.values() if e.closing is None))  # the least recently used
        self._admit(patient, entry)
        return entry

    def _admit(self, patient: str, entry: _Patient) -> None:
        """An activated entry among the active ones (its actor made later, by `_run`)."""
        self._activations += 1
        self._active[patient] = entry

    def _start(self, patient: str, entry: _Patient) -> Actor[_Message]:
        self._admit(patient, entry)
        return self._run(entry)

    def _run(self, entry: _Patient) -> Actor[_Message]:
        """The entry's actor, made and running (in a task of the registry's)."""
        entry.actor = actor = self.new_actor(entry.behave, self.mailbox_max)
        assert self._tg is not None
        self._tg.start_soon(self._keep_running, entry)
        return actor

    async def _activate(self, patient: str) -> None:
        """Snapshot + tail -> a running actor; the stash goes into its mailbox in order."""
        try:
            async with self._limiter:
                snapshot, tail = await self._source.load(patient)
        except Exception as exc:  # noqa: BLE001 -- contained: the log still has every record
            _log.error("patients.activation_failed", error=type(exc).__name__)
            for message in self._stashes.pop(patient):
                if isinstance(message, _Query | _Keep):
                    message.reply.fail(exc)
            self._activated.pop(patient).set()
            return
        record = snapshot if snapshot is not None else PatientRecord.empty(patient)
        entry = _Patient(self, patient, record)
        entry.record = await self._fold_tail(patient, entry.record, tail)
        await self._make_room()
        actor = self._start(patient, entry)
        for message in self._stashes.pop(patient):
            await actor.tell(message)
        self._activated.pop(patient).set()

    async def _fold_tail(self, patient: str, record: PatientRecord, tail: Sequence[Applied]) -> PatientRecord:
        """The snapshot's tail folded in: in one linear pass when nothing in it needs more than the fold.

        A merge into this patient brings another's history, and a poison record
        must be skipped alone: those tails go one record at a time, as `apply` does.
        """
        if not any(item.merges_into(record.patient) for item in tail):
            try:
                return self._fold_all(record, tail)
            except Exception:  # noqa: BLE001, S110 -- a poison record in it: found and skipped one at a time below
                pass
        for item in tail:
            try:
                record = await self.apply(record, item)
            except Exception as exc:  # noqa: BLE001 -- a poison record in the tail is skipped, once more quarantined
                await self.poisoned(patient, item, exc)
        return record

    def _fold_all(self, record: PatientRecord, items: Sequence[Applied]) -> PatientRecord:
        """Every item folded in, in linear time with the record's own fold (`extend`); else one by one."""
        if self.fold is apply_record:
            return record.extend((i.lsn, i.recorded_at, i.message_id, i.events) for i in items)
        for item in items:
            record = self.fold(record, item)
        return record

    async def _keep_running(self, entry: _Patient) -> None:
        """Run a patient's actor; after a crash, restart it from its last good state."""
        while True:
            actor = entry.actor
            assert actor is not None
            try:
                await actor.run()
            except Exception as exc:  # noqa: BLE001 -- contained: one patient's crash stays with it
                self._restarts += 1
                _log.warning("patients.actor_crashed", error=type(exc).__name__, attempt=entry.attempts)
                pending = [*entry.unapplied, *actor.take_all()]
                entry.unapplied = []
                entry.actor = successor = self.new_actor(entry.behave, max(self.mailbox_max, len(pending)))
                for message in pending:
                    successor.tell_nowait(message)
                if actor.closed:
                    successor.close()  # it was being passivated: drain, then stop
                continue
            if entry.closing is not None:  # stopped to be passivated (else the registry is stopping)
                await self._let_go(entry)
            return

    # -- passivation ------------------------------------------------------------------

    async def _make_room(self) -> None:
        """Passivate least recently used actors until there is room for one more."""
        while len(self._active) - self._passivating >= self.active_max:
            patient, entry = next((p, e) for p, e in self._active.items() if e.closing is None)
            await self._passivate(patient, entry)

    async def _sweep(self) -> None:
        while True:
            await anyio.sleep(self.idle_timeout_s / 2)
            await self._passivate_idle()

    async def _passivate_idle(self) -> None:
        # A method of its own: the sweep's loop must not keep the last passivated
        # entry (and its whole record) alive in its locals while it sleeps.
        now = self.now()
        for patient, entry in list(self._active.items()):
            idle = now - entry.last_used >= self.idle_timeout_s and (entry.actor is None or entry.actor.depth == 0)
            if idle and entry.closing is None:
                await self._passivate(patient, entry)

    async def passivate_all(self) -> None:
        """Passivate every active actor (a stopping node): their snapshots are saved."""
        for patient, entry in list(self._active.items()):
            if entry.closing is None:
                await self._passivate(patient, entry)

    async def _passivate(self, patient: str, entry: _Patient) -> None:
        """Drain and stop the actor, snapshot its record if it moved, then let it go; returns once it has gone."""
        assert entry is self._active[patient]
        closing = self._close(entry)
        await closing.wait()

    def _close(self, entry: _Patient) -> anyio.Event:
        """Start a passivation: the actor drains its mailbox and stops, and its own task lets it go (`_let_go`).

        An entry whose actor never ran, with no snapshot to save and a short record, goes at once.
        """
        entry.closing = closing = anyio.Event()
        if entry.actor is None and not self._snapshot_due(entry) and _decoded(entry.record) <= _FREED_AT_ONCE_MAX:
            del self._active[entry.patient]
            entry.record = PatientRecord.empty(entry.patient)
            self._passivations += 1
            closing.set()
            return closing
        self._passivating += 1
        actor = entry.actor if entry.actor is not None else self._run(entry)  # its task saves and lets go
        actor.close()
        return closing

    def _snapshot_due(self, entry: _Patient) -> bool:
        """Whether a passivated record is snapshotted: it moved, by enough facts to be worth the write."""
        gained = entry.record.fact_count - entry.snapshot_facts
        return entry.record.last_lsn > entry.snapshot_lsn and gained >= self.snapshot_min_records

    async def _let_go(self, entry: _Patient) -> None:
        """The end of a passivation, in the stopped actor's task: its snapshot if it moved, then it is gone."""
        assert entry.closing is not None
        if self._snapshot_due(entry):
            try:
                await self._source.save(entry.record)
            except Exception as exc:  # noqa: BLE001 -- a snapshot is only a cache: the log has everything
                _log.error("patients.snapshot_failed", error=type(exc).__name__)
        del self._active[entry.patient]
        self._passivating -= 1
        # Senders waiting on `closing` still hold the entry: the record (hundreds of MB for a
        # patient with hundreds of thousands of results) is let go now, not when the last of them has gone.
        long = [*entry.record.sealed, *entry.record.recent] if _decoded(entry.record) > _FREED_AT_ONCE_MAX else []
        entry.record = PatientRecord.empty(entry.patient)
        self._passivations += 1
        entry.closing.set()
        await _let_fall(long)

    async def apply(self, record: PatientRecord, item: Applied) -> PatientRecord:
        """One record into a patient's record; a merge brings in the merged patient's history.

        The merged patient's history up to the merge is its actor's record if it is
        active (read as a value, never asked of the actor: two actors waiting on each
        other could deadlock), else its snapshot and the log after it (`_history`).
        """
        folded = self.fold(record, item)
        for event in item.events:
            if isinstance(event, PatientMerged) and event.surviving == record.patient:
                if folded.has_absorbed(event.merged):
                    continue  # a merge sent again or replayed: its history is in already, and reading it is not free
                history = await self._history(event.merged, up_to=item.lsn)
                folded = (await _unheld(folded)).absorb(await _unheld(history))
        return folded

    async def _history(self, patient: str, *, up_to: int) -> PatientRecord:
        """The merged patient's record through the merge: its actor's record when it is active, else its
        snapshot; the log only for what either lacks. A heavy patient (tens of thousands of records, active,
        so never snapshotted) was read back whole from the log at each merge of it."""
        entry = self._active.get(patient)
        if entry is not None and entry.closing is None:
            held = entry.record  # a value: read, never asked of the actor (see `apply`)
            tail = await self._source.load_after(patient, held.last_lsn) if held.last_lsn < up_to else ()
        else:
            snapshot, tail = await self._source.load(patient)
            held = snapshot if snapshot is not None else PatientRecord.empty(patient)
        if held.last_lsn > up_to:
            # Moved on since the merge (a replay): cut back, never refolded from the log, which may be archived.
            return (await _unheld(held)).until(up_to)
        return self._fold_all(held, [item for item in tail if held.last_lsn < item.lsn <= up_to])

    async def poisoned(self, patient: str, item: Applied, error: Exception) -> None:
        """A record failed `max_attempts` times: quarantine it and go on."""
        self._quarantined += 1
        _log.error("patients.poison_quarantined", lsn=item.lsn, error=type(error).__name__)
        await self._quarantine.quarantine(patient, item, f"{type(error).__name__}: {error}")


def _decoded(record: PatientRecord) -> int:
    """Facts a record holds decoded (held facts are bytes: freed at once)."""
    return len(record.sealed) + len(record.recent)


async def _unheld(record: PatientRecord) -> PatientRecord:
    """The record with its held facts decoded, in a worker thread: a long record's decode never holds the loop."""
    if record.held is None:
        return record
    return await anyio.to_thread.run_sync(record.unheld)


async def _let_fall(facts: list[Fact]) -> None:
    """Drop what holds the facts of a record let go, a slice at a time, with a turn of the loop after each.

    Only this list holds them now (the record has been replaced), so each slice is freed as it goes.
    """
    while facts:
        del facts[-_FREED_SLICE:]
        await anyio.lowlevel.checkpoint()
