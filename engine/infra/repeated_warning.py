"""A warning that may fire many times a second, said at once and then at most once an interval.

A broker that is down makes nats-py call its error callback on every
reconnect attempt (five a second), and every sender's retry during a takeover
fails the same way: one line each buried the one line that mattered. A
`RepeatedWarning` says the first at once, then at most one line per
`interval_s`, carrying how many times it happened since the last line said.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, final

from engine.infra.clock import monotonic

__all__ = ["RepeatedWarning"]


@final
class RepeatedWarning:
    """One event name, said at most once per `interval_s` with its count (`times`)."""

    def __init__(
        self, logger: Any, event: str, interval_s: float = 10.0, clock: Callable[[], float] = monotonic
    ) -> None:
        self._logger = logger
        self._event = event
        self._interval_s = interval_s
        self._clock = clock
        self._times = 0
        self._said_at: float | None = None

    def warn(self, **fields: Any) -> None:
        """Count one more; say it if the interval since the last line has passed."""
        self._times += 1
        now = self._clock()
        if self._said_at is not None and now - self._said_at < self._interval_s:
            return
        self._logger.warning(self._event, times=self._times, **fields)
        self._times, self._said_at = 0, now
