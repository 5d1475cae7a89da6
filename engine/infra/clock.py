"""The node floor's clocks, in one place: every part that reads the time reads it here, or is handed one of these.

- `wall_now`: the wall clock, UTC (when a message was received, when a
  record was made durable); `utc_now` is its ISO 8601 stamp as the log
  writes it, to the microsecond; `epoch_s` is it in seconds, to compare with
  file times.
- `monotonic`: a clock that never steps back, for how long something took
  and when a deadline passes; it has no meaning across processes.

The pure floor reads no clock at all (its callers pass times in), and the
runtime floor reads the event loop's (`actors.loop_clock`), so tests can
drive it; the node's parts take one of these as a parameter for the same
reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Monotonic", "WallClock", "epoch_s", "monotonic", "utc_now", "wall_now"]

WallClock = Callable[[], datetime]
Monotonic = Callable[[], float]


def wall_now() -> datetime:
    """Now, on the wall clock, in UTC."""
    return datetime.now(UTC)


def utc_now() -> str:
    """Now as the log stamps it: ISO 8601 UTC with microseconds."""
    return wall_now().isoformat(timespec="microseconds")


def epoch_s() -> float:
    """Now in seconds since the epoch: the scale of a file's modification time."""
    return time.time()


def monotonic() -> float:
    """Seconds on a clock that never steps back (high resolution): for durations and deadlines."""
    return time.perf_counter()
