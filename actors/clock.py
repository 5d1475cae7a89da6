"""The running event loop's clock, looked up once.

`anyio.current_time()` finds the backend on every call (through sniffio and
`asyncio.current_task`): measured, a tenth of a node's CPU per message when
the scheduler and the patient actors read the time a few times per message.
The function returned here reads the same clock (the one anyio's timeouts
and trio's MockClock use) without the lookup.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["loop_clock"]


def loop_clock() -> Callable[[], float]:
    """The running loop's clock, in seconds; call it from inside the loop."""
    try:
        return asyncio.get_running_loop().time
    except RuntimeError:  # not asyncio: anyio's other backend
        import trio  # noqa: PLC0415 -- only under trio

        return trio.current_time
