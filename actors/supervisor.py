"""Supervision with OTP semantics, on anyio.

A supervisor starts its children in order (each reports readiness with
`task_status.started()`, so a failed start raises where it was started),
watches them, and restarts them by their child spec:

- restart types: `PERMANENT` (always restarted), `TRANSIENT` (restarted only
  after a failure), `TEMPORARY` (never restarted);
- strategies: `ONE_FOR_ONE` (the failed child), `ONE_FOR_ALL` (every child,
  stopped in reverse order and started in order), `REST_FOR_ONE` (the failed
  child and those started after it);
- restart intensity: more than `intensity` restarts within `period_s` and the
  supervisor gives up: it stops its children and raises `SupervisorGaveUp`
  (naming the child and its last error) from an ExceptionGroup of every
  cause, which escalates to its parent. A child spec may carry its own
  intensity and period, counted apart from its siblings' (a source that
  flaps must not use up the log's allowance, and the log may allow none);
- failures of the kinds given as `escalate` are never restarted: the
  supervisor stops and raises the failure itself (a configuration mistake
  would fail the same way again);
- backoff between restarts: exponential from `backoff_base_s`, capped at
  `backoff_max_s`, with equal jitter (between half and all of it) from an
  injected random source, so tests are deterministic.

Cancellation is never a failure: a cancelled child or supervisor just stops.
`stop()` stops the children in reverse order, then the supervisor returns;
`stop_child(name)` stops one for good (a node stops its sources first, then
drains, then stops the rest). `status()` says each child's state, restarts and
last error, for an operator.
"""

from __future__ import annotations

import contextlib
import enum
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, final

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from engine.core.errors import VigilError, error_summary, first_leaf

__all__ = ["ChildSpec", "ChildStatus", "Restart", "Strategy", "Supervisor", "SupervisorGaveUp"]

_log = structlog.get_logger("vigil.supervisor")


class Restart(enum.Enum):
    """When a child is restarted."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(enum.Enum):
    """Which children a restart takes with it."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


@dataclass(frozen=True)
class ChildSpec:
    """A child: its name, how to run it (`start(task_status=...)`), when to restart it.

    `intensity` and `period_s`, when given, bound this child's restarts on
    their own; otherwise it shares the supervisor's.
    """

    name: str
    start: Callable[..., Awaitable[Any]]
    restart: Restart = Restart.PERMANENT
    intensity: int | None = None
    period_s: float | None = None


ChildState = Literal["starting", "running", "restarting", "stopped"]


@final
class ChildStatus(msgspec.Struct, frozen=True):
    """One child as an operator sees it: `vigil status` prints a row of these per supervisor."""

    name: str
    state: ChildState
    restarts: int
    last_error: str | None  # the exception's type and where it was raised: never its text, which may hold PHI


class SupervisorGaveUp(VigilError):  # noqa: N818 -- it is what happened, like OTP's "shutdown"
    """Too many restarts too fast: the supervisor stopped; its `__cause__` groups every failure."""


@final
class _Incarnation:
    """One run of one child."""

    __slots__ = ("done", "index", "scope", "started")

    def __init__(self, index: int) -> None:
        self.index = index
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.started = False


_Exit = tuple[_Incarnation, Exception | None]  # an incarnation that ended, and its failure if any


@final
class _Relay:
    """The child's task_status: tells the supervisor's `start` which incarnation is ready."""

    def __init__(self, outer: TaskStatus[_Incarnation], incarnation: _Incarnation) -> None:
        self._outer = outer
        self._incarnation = incarnation

    def started(self, value: object = None) -> None:  # noqa: ARG002 -- TaskStatus's signature; the child's value is not used
        self._incarnation.started = True
        self._outer.started(self._incarnation)


@final
class Supervisor:
    """Runs and restarts children; build, then `await tg.start(sup.run)`."""

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: int = 3,
        period_s: float = 5.0,
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 10.0,
        rng: random.Random | None = None,
        name: str = "supervisor",
        escalate: tuple[type[Exception], ...] = (),
    ) -> None:
        if intensity < 0 or period_s <= 0 or backoff_base_s < 0 or backoff_max_s < backoff_base_s:
            raise ValueError("intensity >= 0, period_s > 0 and 0 <= backoff_base_s <= backoff_max_s")
        self.children = list(children)
        self.strategy = strategy
        self.name = name
        self._escalate = escalate  # failures no restart can mend (a configuration mistake): raised at once
        self._intensity = intensity
        self._period = period_s
        self._base = backoff_base_s
        self._max = backoff_max_s
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 -- jitter, not security
        self._running: list[_Incarnation | None] = [None] * len(self.children)
        # Restart times per allowance: -1 is the shared one, an index a child's own.
        self._restarts: dict[int, deque[float]] = {}
        self._counts = [0] * len(self.children)
        self._last_errors: list[str | None] = [None] * len(self.children)
        self._stopped: set[int] = set()  # children stopped for good: never started again
        self._stopping = False  # `stop` has begun: no child comes back, whatever exits meanwhile
        self._failures: list[Exception] = []
        # The exit channel lives for one run (see `run`).
        self._send: MemoryObjectSendStream[_Exit] | None = None
        self._tg: TaskGroup | None = None
        self.restart_count = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the children in order, then supervise until stopped or given up.

        Raises:
            SupervisorGaveUp: the restart intensity was exceeded (or a first start failed).
        """
        # A restarted supervisor starts afresh, as in OTP: no children, no restart history.
        send, receive = anyio.create_memory_object_stream[_Exit](max(1, len(self.children)) * 2)
        self._send = send
        self._running = [None] * len(self.children)
        self._restarts.clear()
        self._stopped.clear()
        self._stopping = False
        self._failures = []
        with send, receive:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for index in range(len(self.children)):
                    await self._start(index)
                task_status.started()
                async for incarnation, error in receive:
                    if self._running[incarnation.index] is not incarnation:
                        continue  # an incarnation stopped on purpose, already replaced
                    self._running[incarnation.index] = None
                    await self._after_exit(incarnation.index, error)

    async def stop(self) -> None:
        """Stop every child in reverse start order; then `run` returns."""
        self._stopping = True
        for index in reversed(range(len(self.children))):
            await self.stop_child(self.children[index].name)
        if self._send is not None:
            self._send.close()

    async def stop_child(self, name: str) -> None:
        """Stop one child for good: it is not restarted (a node stops its sources before it drains)."""
        index = self._index(name)
        self._stopped.add(index)
        await self._stop(index)

    def status(self) -> list[ChildStatus]:
        """Each child's state, restart count and last error, in start order."""
        return [self._status_of(i) for i in range(len(self.children))]

    def _status_of(self, index: int) -> ChildStatus:
        incarnation = self._running[index]
        state: ChildState
        if index in self._stopped:
            state = "stopped"
        elif incarnation is None:
            state = "restarting" if self._counts[index] else "starting"
        else:
            state = "running" if incarnation.started else "starting"
        return ChildStatus(self.children[index].name, state, self._counts[index], self._last_errors[index])

    def _index(self, name: str) -> int:
        for index, spec in enumerate(self.children):
            if spec.name == name:
                return index
        raise KeyError(name)

    # -- children -----------------------------------------------------------------

    async def _start(self, index: int) -> None:
        assert self._tg is not None
        incarnation: _Incarnation = await self._tg.start(self._child, index)
        self._running[index] = incarnation
        if self._stopping or index in self._stopped:
            await self._stop(index)  # stopped while it was starting: `stop` found nothing to stop then

    async def _child(self, index: int, *, task_status: TaskStatus[_Incarnation]) -> None:
        incarnation = _Incarnation(index)
        error: Exception | None = None
        try:
            with incarnation.scope:
                await self.children[index].start(task_status=_Relay(task_status, incarnation))
        except Exception as exc:
            if not incarnation.started:
                raise  # a failed start raises where it was started
            error = exc
        finally:
            incarnation.done.set()
        if not incarnation.started:
            task_status.started(incarnation)  # returned at once without reporting ready
        if not incarnation.scope.cancel_called:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):  # stopping
                assert self._send is not None
                self._send.send_nowait((incarnation, error))

    async def _stop(self, index: int) -> None:
        incarnation = self._running[index]
        if incarnation is not None:
            self._running[index] = None
            incarnation.scope.cancel()
            await incarnation.done.wait()

    # -- restarting ---------------------------------------------------------------

    async def _after_exit(self, index: int, error: Exception | None) -> None:
        spec = self.children[index]
        if isinstance(error, ExceptionGroup):
            leaf = first_leaf(error)  # a child's own task group wraps what failed in it
            error = leaf if isinstance(leaf, Exception) else error
        if error is not None:
            self._failures.append(error)
            self._last_errors[index] = error_summary(error)
            _log.error("supervisor.child_failed", supervisor=self.name, child=spec.name, error=self._last_errors[index])
            if isinstance(error, self._escalate):
                self._stopped.add(index)
                raise error
        wanted = spec.restart is Restart.PERMANENT or (spec.restart is Restart.TRANSIENT and error is not None)
        if not wanted or self._stopping or index in self._stopped:
            self._stopped.add(index)
            return
        delay = self._count_restart(index)
        await anyio.sleep(delay)
        # Stopped meanwhile (the whole tree, or some of it for good): what is stopped stays stopped,
        # else the tree's task group would wait for a child nobody stops again.
        if self._stopping or index in self._stopped:
            return
        indexes = [i for i in self._affected(index) if i not in self._stopped]
        for other in reversed(indexes):
            if other != index:
                await self._stop(other)
        for other in indexes:
            await self._restart(other)

    def _affected(self, index: int) -> list[int]:
        if self.strategy is Strategy.ONE_FOR_ALL:
            return list(range(len(self.children)))
        if self.strategy is Strategy.REST_FOR_ONE:
            return list(range(index, len(self.children)))
        return [index]

    async def _restart(self, index: int) -> None:
        """Start a child again; a failed start counts as another failure and is retried (until stopped)."""
        while not self._stopping and index not in self._stopped:
            try:
                await self._start(index)
            except Exception as exc:  # noqa: BLE001 -- any start failure is counted, then escalated
                self._failures.append(exc)
                self._last_errors[index] = error_summary(exc)
                _log.error(
                    "supervisor.restart_failed",
                    supervisor=self.name,
                    child=self.children[index].name,
                    error=self._last_errors[index],
                )
                await anyio.sleep(self._count_restart(index))
            else:
                return

    def _count_restart(self, index: int) -> float:
        """Record a restart; give up past the intensity; return the backoff before it."""
        spec = self.children[index]
        own = spec.intensity is not None
        intensity = spec.intensity if spec.intensity is not None else self._intensity
        period = spec.period_s if spec.period_s is not None else self._period
        times = self._restarts.setdefault(index if own else -1, deque())
        now = anyio.current_time()
        while times and now - times[0] > period:
            times.popleft()
        times.append(now)
        self.restart_count += 1
        self._counts[index] += 1
        if len(times) > intensity:
            causes = self._failures or [RuntimeError(f"{spec.name} kept exiting")]
            last = self._last_errors[index] or "it exited"
            _log.error(
                "supervisor.gave_up", supervisor=self.name, child=spec.name, restarts=len(times), period_s=period
            )
            raise SupervisorGaveUp(
                f"{self.name}: {spec.name} failed more than {intensity} times in {period:g} s; last: {last}"
            ) from ExceptionGroup(f"{self.name}: the failures", causes)
        delay: float = min(self._max, self._base * 2.0 ** (len(times) - 1))
        return delay / 2 + self._rng.random() * delay / 2
