"""After durable: records out to their patients' actors and news of them to the read side."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import final

from actors import Applied, PatientActors
from engine.alerts import SendersSeen
from engine.core.model import Envelope
from engine.projections import ProjectionRunner, Record
from engine.routes import Routes
from engine.wal import Position

__all__ = ["Fanout"]


@final
class Fanout:
    """Hands each durable record on.

    The patient registry is set by the child that runs it (anew on its
    restart); the read side, once the log it reads is open.
    """

    def __init__(self) -> None:
        self.actors: PatientActors | None = None
        self.projections: ProjectionRunner | None = None
        self.routes: Routes | None = None
        self.senders = SendersSeen()  # when each feed was last heard (quiet-feed alerts, per-sender metrics)

    async def apply(
        self, envelopes: Sequence[Envelope], positions: Sequence[Position], *, to_actors: bool = True
    ) -> None:
        """Durable records to their patients' actors (unless not `to_actors`), and to the read side.

        A duplicate is skipped: its first copy was applied when it became durable.
        """
        actors = self.actors
        assert actors is not None, "the patient registry is not running"
        for env, position in zip(envelopes, positions, strict=True):
            if position.duplicate:
                continue
            recorded_at = position.recorded_at or ""
            applied = Applied(position.lsn, recorded_at, env.message_id, env.events, env.lane)
            patients = tuple(p for p in (env.patient, *env.other_patients) if p)
            if self.projections is not None:
                self.projections.notify(Record(position.lsn, recorded_at, patients, env.events), env.lane)
            for patient in patients if to_actors else ():
                await actors.deliver(patient, applied)
        self.senders.saw(envelopes, time.time_ns() // 1000)
        if self.routes is not None:
            self.routes.notify()
