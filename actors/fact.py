"""One fact of a patient's record: an event with both its times and its origin (see `actors.record`)."""

from __future__ import annotations

from typing import final

import msgspec

from engine.core.model import Event

__all__ = ["Fact"]


@final
class Fact(msgspec.Struct, frozen=True, array_like=True, gc=False):  # no cycles possible: see engine.core.model
    """One event of the patient's history, with both its times and its origin."""

    lsn: int
    recorded_at: str
    effective_at: str
    message_id: str
    source_patient: str
    event: Event
