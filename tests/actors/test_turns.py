"""The turn gate: bounded turns, the most urgent waiting turn first, cancellation passes the slot on."""

from __future__ import annotations

import anyio
import pytest

from actors.turns import TurnGate

pytestmark = pytest.mark.anyio


async def test_waiters_go_by_priority_then_arrival() -> None:
    """With the one slot held, waiters queue; on release the most urgent, then the oldest, goes."""
    gate = TurnGate(1)
    order: list[str] = []
    await gate.acquire(2)

    async def turn(name: str, priority: int) -> None:
        await gate.acquire(priority)
        order.append(name)
        gate.release()

    async with anyio.create_task_group() as tg:
        for name, priority in (("batch-1", 2), ("standard", 1), ("batch-2", 2), ("critical", 0)):
            tg.start_soon(turn, name, priority)
            await _settle()
        assert gate.waiting == 4
        gate.release()
    assert order == ["critical", "standard", "batch-1", "batch-2"]


async def _settle() -> None:
    for _ in range(10):
        await anyio.lowlevel.checkpoint()


async def test_a_cancelled_waiter_passes_its_slot_on() -> None:
    """Cancelling a waiter never loses a slot: the gate ends where it began."""
    gate = TurnGate(1)
    await gate.acquire(1)
    with anyio.move_on_after(0.01):
        await gate.acquire(0)
    assert gate.waiting == 0
    gate.release()
    await gate.acquire(0)  # the one slot is there
    gate.release()


def test_a_gate_needs_a_slot() -> None:
    """No slot would deadlock every actor."""
    with pytest.raises(ValueError, match="at least one slot"):
        TurnGate(0)
