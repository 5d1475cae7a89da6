"""Cutting one input's messages (stdin, a file, a NATS batch) into lane groups that keep each patient's order.

Pure. Answering message by message costs a task, a cancel scope, an event
and a scheduler turn each: about three quarters of a node's time on a
stream (see benchmarks/bench_node.py). A stream instead goes in windows of
consecutive messages; a window's messages of one lane go through the lane
as one group (one scheduler turn, one log append, so one fsync). Windows are
answered in order, so a patient's messages in different windows keep their
order. Within a window the lane groups run side by side, which is safe only
if no patient has messages in two of them, so a window closes before the
message that would make one; a message that cannot be grouped (a framing
error, FHIR, a classification error) is answered on its own, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

import msgspec

from engine.core.model import Lane

__all__ = ["Window", "patient_hint", "windows"]


@final
class Window(msgspec.Struct, frozen=True):
    """Indexes into the input: lane groups to run side by side, or messages to answer one by one."""

    groups: tuple[tuple[Lane, tuple[int, ...]], ...] = ()
    one_by_one: tuple[int, ...] = ()


def windows(
    lanes: Sequence[Lane | None], patients: Sequence[bytes | None], size: int, alone_max: int = 512
) -> list[Window]:
    """The windows of an input: message i has lane `lanes[i]` (None: not groupable), patient hint `patients[i]`.

    A window closes before the message that would put one patient in two of
    its lane groups, or at `size` messages; messages that cannot be grouped
    are windows of their own (a run of them, up to `alone_max`, one window),
    answered one by one.
    """
    found: list[Window] = []
    groups: dict[Lane, list[int]] = {}
    lane_of_patient: dict[bytes, Lane] = {}
    count = 0

    def close() -> None:
        nonlocal count
        if groups:
            # Most urgent first: the critical group reaches the scheduler before the others.
            ordered = sorted(groups, key=lambda lane: lane.rank)
            found.append(Window(groups=tuple((lane, tuple(groups[lane])) for lane in ordered)))
        groups.clear()
        lane_of_patient.clear()
        count = 0

    for i, lane in enumerate(lanes):
        if lane is None:
            close()
            previous = found[-1].one_by_one if found else ()
            if previous and previous[-1] == i - 1 and len(previous) < alone_max:
                found[-1] = Window(one_by_one=(*previous, i))  # a run of them (an NDJSON stream) stays one window
            else:
                found.append(Window(one_by_one=(i,)))
            continue
        patient = patients[i]
        if count >= size or (patient is not None and lane_of_patient.get(patient, lane) is not lane):
            close()
        if patient is not None:
            lane_of_patient[patient] = lane
        groups.setdefault(lane, []).append(i)
        count += 1
    close()
    return found


def patient_hint(raw: bytes) -> bytes | None:
    """PID-3 as sent, from the raw bytes: enough to keep one patient's messages in order."""
    for marker in (b"\rPID", b"\nPID"):
        start = raw.find(marker)
        if start >= 0:
            line = raw[start + 1 :].split(b"\r", 1)[0].split(b"\n", 1)[0]
            fields = line.split(line[3:4]) if len(line) > 3 else []
            return fields[3] if len(fields) > 3 and fields[3] else None
    return None
