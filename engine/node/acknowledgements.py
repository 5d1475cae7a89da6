"""Actions the node records in its own log, beside the messages it receives (`Kind.COMMAND`).

Pure. A clinician's acknowledgement of a critical result is a fact of the
record, so it is an event in the tamper-evident log like any message, and
the read side and the actors learn of it the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from actors import ResultView
from engine.core.model import Envelope, Kind, Lane, ResultAcknowledged, ResultReported

__all__ = ["acknowledgement", "was_critical"]


def was_critical(result: ResultView, critical_flags: Iterable[str]) -> bool:
    """True when any version of the result carried a critical abnormal flag."""
    flags = frozenset(critical_flags)
    return any(
        isinstance(f.event, ResultReported) and not flags.isdisjoint(f.event.abnormal_flags) for f in result.versions
    )


def acknowledgement(patient: str, result_key: str, by: str, note: str, *, request_id: str, now: str) -> Envelope:
    """The envelope recording that `by` acknowledged a critical result.

    `request_id` (one per request) makes the message id: a retried request is
    a duplicate in the log, not a second acknowledgement.
    """
    event = ResultAcknowledged(result_key, by, now, note)
    raw = msgspec.json.encode(
        {"command": "acknowledge", "patient": patient, "result_key": result_key, "by": by, "note": note, "at": now}
    )
    return Envelope(
        f"command:{request_id}",
        Kind.COMMAND,
        "ACKNOWLEDGE^RESULT",
        patient,
        Lane.CRITICAL,
        "critical result acknowledged",
        now,
        "admin",
        raw,
        (event,),
    )
