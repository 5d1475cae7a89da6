"""What patient actors need from the node: their history, their snapshots, a quarantine.

`LogRecordSource` implements `actors.RecordSource` over the write-ahead log
(the patient index reads only that patient's records, skipping whole segments
a snapshot already covers) and the snapshot store (a snapshot is the encoded
`PatientRecord`). `PoisonQuarantine` implements `actors.Quarantine` over the
quarantine log, with the record's original bytes, once per LSN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

import anyio

from actors import Applied, PatientRecord
from engine.infra.clock import utc_now
from engine.node.record_codec import decode_record, encode_record
from engine.wal import POISON_RECORD, Quarantine, Snapshot, Snapshots, WriteAheadLog, decode_events

__all__ = ["LogRecordSource", "PoisonQuarantine"]

# A patient with at most this many records is read on the loop: about 7 us a record from the page cache, so
# 16 cost about what a hand-off to a worker thread does, and the thread's work then competes with the loop for
# the interpreter. With 4, a skewed 300,000-message feed cost 1.5x as much per message at its end as at its start
# (its known patients grew past 4 records), with 16 about 1.2x; a million messages, 1.69x -> 1.48x.
_INLINE_RECORDS = 16


@final
class LogRecordSource:
    """Activation state from the newest snapshot plus the log tail; snapshots on passivation."""

    def __init__(self, wal: WriteAheadLog, snapshots: Snapshots) -> None:
        self._wal = wal
        self._snapshots = snapshots

    async def load(self, patient: str) -> tuple[PatientRecord | None, Sequence[Applied]]:
        """The newest snapshot and the records after it; in a worker thread unless there is next to nothing.

        A patient seen for the first time has no snapshot and a record or two
        (in the page cache, just written): reading them here costs less than
        the hand-off to a thread and back, which made a first-seen patient cost
        several times a known one.
        """
        at_hand = self.load_now(patient)
        if at_hand is not None:
            return at_hand
        return await anyio.to_thread.run_sync(self._load, patient)

    def load_now(
        self, patient: str, in_hand: Applied | None = None
    ) -> tuple[PatientRecord | None, Sequence[Applied]] | None:
        """A patient with a short history: its records read here and now; None for the rest (a thread's work).

        While the log holds every record it was given (nothing released), a short history is read
        whole, whatever snapshot it has: a snapshot is a fold of the same records (invariant 3), so
        the store is not asked, which cost a first-seen patient an SQL look. But a merge into the
        patient brings another's history, maybe a long one, that its snapshot holds folded: such a
        patient with a snapshot goes the usual way, as does any patient with one once segments are
        released (a snapshot may then hold what the log no longer does).

        `in_hand` is a record of the patient being handed on after it became durable, so the index
        holds it: when that is the patient's only record, it is the history, and nothing is read
        (the read and decode were about a quarter of what a first-seen patient cost more than a known one).
        """
        count = self._wal.patient_record_count(patient)
        if count > _INLINE_RECORDS:
            return None
        whole_log = self._wal.first_lsn <= 1
        if not whole_log and self._snapshots.exists(patient):
            return None
        loaded = (None, [in_hand]) if count == 1 and in_hand is not None else self._load(patient, snapshot=False)
        if whole_log and any(item.merges_into(patient) for item in loaded[1]) and self._snapshots.exists(patient):
            return None
        return loaded

    async def load_after(self, patient: str, after_lsn: int) -> Sequence[Applied]:
        return await anyio.to_thread.run_sync(self._tail, patient, after_lsn)

    def _tail(self, patient: str, after_lsn: int) -> list[Applied]:
        return [
            Applied(r.lsn, r.recorded_at, r.message_id, r.envelope.events, r.envelope.lane)
            for r in self._wal.read_patient(patient, after_lsn=after_lsn, decode=decode_events)
        ]

    def _load(self, patient: str, *, snapshot: bool = True) -> tuple[PatientRecord | None, Sequence[Applied]]:
        """`snapshot=False`: the store was just asked and has none (not asked twice)."""
        found = self._snapshots.load(patient, at_most_lsn=self._wal.last_lsn) if snapshot else None
        record = decode_record(found.state) if found is not None else None
        return record, self._tail(patient, record.last_lsn if record is not None else 0)

    def snapshot_lsns(self, patients: Sequence[str]) -> dict[str, int]:
        """Each patient's newest snapshot LSN (0: none). Blocking: in a worker thread."""
        return {p: s.lsn if (s := self._snapshots.load(p)) is not None else 0 for p in patients}

    def snapshot_many(self, patients: Sequence[str]) -> dict[str, int]:
        """Snapshot each patient's record as the log has it now, without its actor; each one's snapshot LSN.

        For retention (blocking: in a worker thread): the fold is the
        activation's (snapshot, then the log's tail, in one linear pass),
        saved in one transaction. A patient whose tail holds a merge into it,
        or a record that fails the fold, is left out: its actor makes its
        snapshot (`PatientActors.keep_snapshot`). The log is the truth, so a
        snapshot made beside a running actor is the same record, or an
        earlier one of it, never a different one.
        """
        made = []
        for patient in patients:
            snapshot, tail = self._load(patient)
            if any(a.merges_into(patient) for a in tail):
                continue
            record = snapshot if snapshot is not None else PatientRecord.empty(patient)
            try:
                record = record.extend((a.lsn, a.recorded_at, a.message_id, a.events) for a in tail)
            except Exception:  # noqa: BLE001, S112 -- a poison record: its actor skips and quarantines it
                continue
            if record.last_lsn > (snapshot.last_lsn if snapshot is not None else 0):
                made.append(Snapshot(patient, record.last_lsn, utc_now(), encode_record(record)))
            elif snapshot is not None:
                made.append(Snapshot(patient, snapshot.last_lsn, "", b""))  # already past: nothing to write
        self._snapshots.save_many([s for s in made if s.state])
        return {s.key: s.lsn for s in made}

    async def save(self, record: PatientRecord) -> None:
        """Encoded in the store's worker thread, not on the loop: a record of 30,000 facts took 14 ms to encode."""
        await anyio.to_thread.run_sync(self._save, record, utc_now())

    def _save(self, record: PatientRecord, taken_at: str) -> None:
        self._snapshots.save(Snapshot(record.patient, record.last_lsn, taken_at, encode_record(record)))


@final
class PoisonQuarantine:
    """Puts a record that keeps failing its patient's actor into quarantine, once per LSN."""

    def __init__(self, wal: WriteAheadLog, quarantine: Quarantine) -> None:
        self._wal = wal
        self._quarantine = quarantine

    async def quarantine(self, _patient: str, item: Applied, reason: str) -> None:
        await anyio.to_thread.run_sync(self._add, item, reason)

    def _add(self, item: Applied, reason: str) -> None:
        if any(q.error.get("lsn") == item.lsn for q in self._quarantine.summaries()):
            return  # already there (a poison record in the tail fails every activation)
        record = next(iter(self._wal.read_from(item.lsn)), None)
        raw = record.envelope.raw if record is not None and record.lsn == item.lsn else b""
        self._quarantine.add(
            raw,
            source=f"patient actor (LSN {item.lsn})",
            reason=f"failed its patient's actor repeatedly: {reason}",
            error={"type": POISON_RECORD, "reason": reason, "lsn": item.lsn, "message_id": item.message_id},
            at=utc_now(),
        )
