"""Builders for route tests: a log envelope with a real HL7 body, a route running in a task group, a polled wait."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio

from engine.core.model import Envelope, Kind, Lane, Unrecognized
from engine.routes import Route
from tests.harness.helpers import hl7

__all__ = ["route_envelope", "running", "until"]


def route_envelope(i: int, patient: str, lane: Lane = Lane.STANDARD, mtype: str = "ORU^R01") -> Envelope:
    msh = f"MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261205||{mtype}|C{i:06d}|P|2.5.1"
    return Envelope(
        message_id=f"hl7:LAB|GENHOSP|C{i:06d}",
        kind=Kind.HL7V2,
        message_type=mtype,
        patient=patient,
        lane=lane,
        lane_reason="test",
        received_at="2026-12-05T10:00:00Z",
        source="test",
        raw=hl7(msh, f"PID|1||{patient.split('|')[1]}^^^GENHOSP^MR", "OBX|1|NM|2823-3^K^LN||4.1"),
        events=(Unrecognized(mtype, f"n{i}"),),
    )


@asynccontextmanager
async def running(route: Route) -> AsyncIterator[Route]:
    async with anyio.create_task_group() as tg:
        await tg.start(route.run)
        yield route
        tg.cancel_scope.cancel()


async def until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    with anyio.move_on_after(timeout_s):
        while not condition():  # noqa: ASYNC110 -- another process's file and a route's counters: no event to wait on
            await anyio.sleep(0.02)
