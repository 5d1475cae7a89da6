"""What patient actors stand on, in memory: a `RecordSource` and a `Quarantine` for the actor tests.

They keep the contract the log-backed ones keep (tests/node/test_record_source_contract.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from actors import Applied, PatientRecord

__all__ = ["MemoryLog", "MemoryQuarantine"]


class MemoryLog:
    """A `RecordSource`: per-patient records and snapshots in memory."""

    def __init__(self) -> None:
        self.records: dict[str, list[Applied]] = {}
        self.snapshots: dict[str, PatientRecord] = {}
        self.loads = 0
        self.tails = 0  # `load_after` calls
        self.gate: anyio.Event | None = None
        self.fail_next_load: Exception | None = None
        self.at_hand = False  # whether `load_now` answers (as the node's source does for a first-seen patient)
        self.in_hand: Applied | None = None  # the record `load_now` was last handed

    def append(self, patient: str, item: Applied) -> None:
        self.records.setdefault(patient, []).append(item)

    def load_now(
        self, patient: str, in_hand: Applied | None = None
    ) -> tuple[PatientRecord | None, Sequence[Applied]] | None:
        self.in_hand = in_hand
        if not self.at_hand or self.gate is not None or self.fail_next_load is not None:
            return None
        self.loads += 1
        return self._state(patient)

    async def load_after(self, patient: str, after_lsn: int) -> Sequence[Applied]:
        self.tails += 1
        return [r for r in self.records.get(patient, []) if r.lsn > after_lsn]

    async def load(self, patient: str) -> tuple[PatientRecord | None, Sequence[Applied]]:
        self.loads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next_load is not None:
            error, self.fail_next_load = self.fail_next_load, None
            raise error
        return self._state(patient)

    def _state(self, patient: str) -> tuple[PatientRecord | None, Sequence[Applied]]:
        snapshot = self.snapshots.get(patient)
        after = snapshot.last_lsn if snapshot else 0
        return snapshot, [r for r in self.records.get(patient, []) if r.lsn > after]

    async def save(self, record: PatientRecord) -> None:
        self.snapshots[record.patient] = record


class MemoryQuarantine:
    """A `Quarantine`: poison records in a list, once per LSN."""

    def __init__(self) -> None:
        self.items: list[tuple[str, int, str]] = []

    async def quarantine(self, patient: str, item: Applied, reason: str) -> None:
        if any(lsn == item.lsn for _patient, lsn, _reason in self.items):
            return  # once per LSN, as on the log: a poison record in the tail fails every activation
        self.items.append((patient, item.lsn, reason))
