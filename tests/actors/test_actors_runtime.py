"""The actor runtime and OTP supervision: on trio and asyncio; timings on trio's MockClock."""

from __future__ import annotations

import gc
import random
import weakref
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import trio
import trio.lowlevel
import trio.testing
from anyio.abc import TaskStatus

from actors.actor import Actor, ActorClosed, MailboxFull, Reply, ask
from actors.supervisor import ChildSpec, Restart, Strategy, Supervisor, SupervisorGaveUp

pytestmark = pytest.mark.anyio


# -- actors --------------------------------------------------------------------------


async def test_turns_take_batches_in_order() -> None:
    """Messages are handled in arrival order, at most batch_max per turn."""
    turns: list[list[int]] = []

    async def behavior(messages: list[int]) -> None:
        turns.append(messages)

    actor: Actor[int] = Actor(behavior, capacity=100, batch_max=4)
    for i in range(10):
        actor.tell_nowait(i)
    actor.close()
    await actor.run()
    assert [m for turn in turns for m in turn] == list(range(10))
    assert max(len(t) for t in turns) == 4
    assert actor.handled == 10


async def test_a_stopped_actor_lets_go_of_its_owner_without_the_cycle_collector() -> None:
    """An owner holding its actor, whose behaviour is the owner's method, is freed by reference counting once the
    actor has stopped: a node freezes survivors out of the collector's sight, and such cycles (one per passivated
    patient) stayed until its next full sweep, 90,000 of them after 150,000 messages."""

    class Owner:
        def __init__(self) -> None:
            self.actor: Actor[int] = Actor(self.behave)
            self.seen: list[int] = []

        async def behave(self, messages: list[int]) -> None:
            self.seen.extend(messages)

    owner = Owner()
    gone = weakref.ref(owner)
    owner.actor.tell_nowait(1)
    owner.actor.close()
    await owner.actor.run()
    assert owner.seen == [1]
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        del owner
        assert gone() is None
    finally:
        if was_enabled:
            gc.enable()


async def test_a_full_mailbox_pushes_back() -> None:
    """tell_nowait raises MailboxFull; tell waits until the actor makes room."""
    seen: list[int] = []

    async def behavior(messages: list[int]) -> None:
        seen.extend(messages)

    actor: Actor[int] = Actor(behavior, capacity=2, batch_max=1)
    actor.tell_nowait(1)
    actor.tell_nowait(2)
    with pytest.raises(MailboxFull):
        actor.tell_nowait(3)
    async with anyio.create_task_group() as tg:
        tg.start_soon(actor.run)
        for i in range(3, 20):
            await actor.tell(i)  # waits while full
        actor.close()
    assert seen == list(range(1, 20))
    with pytest.raises(ActorClosed):
        actor.tell_nowait(99)


async def test_ask_answers_and_times_out() -> None:
    """ask gets the reply; an actor that never answers makes ask raise TimeoutError."""

    async def doubler(messages: list[tuple[int, Reply[int]]]) -> None:
        for value, reply in messages:
            if value >= 0:
                reply.set(value * 2)

    actor: Actor[tuple[int, Reply[int]]] = Actor(doubler)
    async with anyio.create_task_group() as tg:
        await tg.start(actor.run)
        assert await ask(actor, lambda r: (21, r), timeout_s=5) == 42
        with pytest.raises(TimeoutError):
            await ask(actor, lambda r: (-1, r), timeout_s=0.05)
        actor.close()


async def test_a_failing_behavior_fails_its_run() -> None:
    """An exception in a turn ends the actor's run with it (for its supervisor to see)."""

    async def broken(messages: list[int]) -> None:
        raise ValueError("bad message")

    actor: Actor[int] = Actor(broken)
    actor.tell_nowait(1)
    with pytest.raises(ValueError, match="bad message"):
        await actor.run()


# -- supervision ---------------------------------------------------------------------


class Probe:
    """A child that records its life and fails on demand."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.starts = 0
        self.fail_next: Exception | None = None
        self.exit_next = False
        self._poke = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.starts += 1
        self.log.append(f"start {self.name}")
        task_status.started()
        try:
            while True:
                await self._poke.wait()
                self._poke = anyio.Event()
                if self.fail_next is not None:
                    error, self.fail_next = self.fail_next, None
                    raise error
                if self.exit_next:
                    self.exit_next = False
                    return
        finally:
            self.log.append(f"stop {self.name}")

    def fail(self, error: Exception | None = None) -> None:
        self.fail_next = error or RuntimeError(f"{self.name} failed")
        self._poke.set()

    def exit(self) -> None:
        self.exit_next = True
        self._poke.set()


def _tree(strategy: Strategy, *restarts: Restart, **kwargs: Any) -> tuple[Supervisor, list[Probe], list[str]]:
    log: list[str] = []
    probes = [Probe(name, log) for name in "abc"[: len(restarts)]]
    specs = [ChildSpec(p.name, p.run, r) for p, r in zip(probes, restarts, strict=True)]
    kwargs.setdefault("backoff_base_s", 0.0)
    kwargs.setdefault("backoff_max_s", 0.0)
    return Supervisor(specs, strategy=strategy, rng=random.Random(1), **kwargs), probes, log


async def _settle() -> None:
    for _ in range(20):
        await anyio.lowlevel.checkpoint()


async def test_children_start_in_order_and_stop_in_reverse() -> None:
    """Start a, b, c in order, each ready before the next; stop() stops c, b, a."""
    sup, _, log = _tree(Strategy.ONE_FOR_ONE, Restart.PERMANENT, Restart.PERMANENT, Restart.PERMANENT)
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        assert log == ["start a", "start b", "start c"]
        await sup.stop()
    assert log[3:] == ["stop c", "stop b", "stop a"]


@pytest.mark.parametrize(
    ("strategy", "expected_starts"),
    [
        (Strategy.ONE_FOR_ONE, [1, 2, 1]),
        (Strategy.ONE_FOR_ALL, [2, 2, 2]),
        (Strategy.REST_FOR_ONE, [1, 2, 2]),
    ],
)
async def test_strategies(strategy: Strategy, expected_starts: list[int]) -> None:
    """b fails: one_for_one restarts b; one_for_all all; rest_for_one b and c."""
    sup, probes, log = _tree(strategy, Restart.PERMANENT, Restart.PERMANENT, Restart.PERMANENT)
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        probes[1].fail()
        await _settle()
        assert [p.starts for p in probes] == expected_starts
        if strategy is Strategy.ONE_FOR_ALL:
            # the others are stopped in reverse order before all start again in order
            assert log[4:9] == ["stop c", "stop a", "start a", "start b", "start c"]
        await sup.stop()


async def test_restart_types() -> None:
    """Permanent always returns; transient only after a failure; temporary never."""
    sup, (perm, trans, temp), _ = _tree(Strategy.ONE_FOR_ONE, Restart.PERMANENT, Restart.TRANSIENT, Restart.TEMPORARY)
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        perm.exit()
        trans.exit()
        temp.fail()
        await _settle()
        assert [p.starts for p in (perm, trans, temp)] == [2, 1, 1]
        trans2 = sup._running[1]
        assert trans2 is None  # a transient that exited normally stays down
        await sup.stop()


async def test_giving_up_escalates_with_every_cause() -> None:
    """More than `intensity` restarts in the period: SupervisorGaveUp, from a group of the failures."""
    sup, (a,), _ = _tree(Strategy.ONE_FOR_ONE, Restart.PERMANENT, intensity=2, period_s=60)

    async def scenario() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            for n in range(3):
                a.fail(ValueError(f"failure {n}"))
                await _settle()

    with pytest.raises(ExceptionGroup) as info:
        await scenario()
    # Groups nest (each task group adds one) and are never unwrapped: find the leaf.
    [error] = list(_leaves(info.value))
    assert isinstance(error, SupervisorGaveUp)
    assert isinstance(error.__cause__, ExceptionGroup)
    assert [str(e) for e in error.__cause__.exceptions] == ["failure 0", "failure 1", "failure 2"]


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


async def test_a_failed_first_start_raises_where_started() -> None:
    """A child that fails before reporting ready fails the supervisor's start."""

    async def broken(*, task_status: TaskStatus[None]) -> None:
        raise OSError("port in use")

    sup = Supervisor([ChildSpec("listener", broken)])
    with pytest.raises(ExceptionGroup) as info:
        await sup.run()
    [error] = _leaves(info.value)
    assert isinstance(error, OSError)
    assert sup.restart_count == 0


async def test_cancellation_is_not_a_failure() -> None:
    """Cancelling the supervisor stops everything without a restart or an error."""
    sup, probes, _ = _tree(Strategy.ONE_FOR_ONE, Restart.PERMANENT, Restart.PERMANENT)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            scope.cancel()
    assert [p.starts for p in probes] == [1, 1]
    assert sup.restart_count == 0


async def test_escalation_to_a_parent_that_restarts_the_child_supervisor() -> None:
    """A child supervisor that gives up is a failed child of its parent, which restarts it."""
    log: list[str] = []
    probe = Probe("worker", log)
    inner = Supervisor([ChildSpec("worker", probe.run)], intensity=0, backoff_base_s=0, backoff_max_s=0, name="inner")
    outer = Supervisor([ChildSpec("inner", inner.run)], intensity=5, backoff_base_s=0, backoff_max_s=0, name="outer")
    async with anyio.create_task_group() as tg:
        await tg.start(outer.run)
        probe.fail()
        await _settle()
        assert outer.restart_count == 1
        assert probe.starts == 2  # the inner supervisor started it again
        await outer.stop()


def test_one_patient_crash_does_not_touch_another() -> None:
    """Two actors under one_for_one: a poison message in one; the other handles everything."""
    handled: dict[str, list[int]] = {"a": [], "b": []}

    def behavior(name: str) -> Callable[[list[int]], Any]:
        async def handle(messages: list[int]) -> None:
            for m in messages:
                if m < 0:
                    raise ValueError("poison")
                handled[name].append(m)

        return handle

    actors = {name: Actor(behavior(name), name=name) for name in "ab"}

    async def scenario() -> None:
        sup = Supervisor(
            [ChildSpec(name, actor.run) for name, actor in actors.items()], backoff_base_s=0, backoff_max_s=0
        )
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            for i in range(50):
                actors["b"].tell_nowait(i)
                if i == 10:
                    actors["a"].tell_nowait(-1)
            await _settle()
            await sup.stop()

    anyio.run(scenario, backend="trio")
    assert handled["b"] == list(range(50))


# -- timings on deterministic time -----------------------------------------------------


def test_backoff_grows_exponentially_with_jitter() -> None:
    """Restarts wait base * 2^(n-1), between half and all of it (seeded jitter), in virtual time."""
    log: list[str] = []
    probe = Probe("a", log)
    times: list[float] = []

    async def run_child(*, task_status: TaskStatus[None]) -> None:
        times.append(trio.current_time())
        await probe.run(task_status=task_status)

    async def scenario() -> None:
        sup = Supervisor(
            [ChildSpec("a", run_child)],
            intensity=10,
            period_s=1000,
            backoff_base_s=1.0,
            backoff_max_s=8.0,
            rng=random.Random(7),
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            for _ in range(5):
                probe.fail()
                await trio.sleep(20)
            await sup.stop()

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    # The n-th restart waits within [d/2, d], d = min(8, 2^(n-1)).
    bounds = [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 8.0), (4.0, 8.0)]
    starts = [times[0], *[times[0] + 20 * i for i in range(1, 5)]]
    for n, (low, high) in enumerate(bounds):
        wait = times[n + 1] - starts[n]
        assert low <= wait <= high, (n, wait)
    assert len(times) == 6


def test_intensity_counts_only_restarts_within_the_period() -> None:
    """Failures spread wider than the period never add up to giving up."""
    log: list[str] = []
    probe = Probe("a", log)

    async def scenario() -> int:
        sup = Supervisor([ChildSpec("a", probe.run)], intensity=1, period_s=10, backoff_base_s=0, backoff_max_s=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            for _ in range(6):
                probe.fail()
                await trio.sleep(11)  # each failure alone in its window
            await sup.stop()
        return sup.restart_count

    assert trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0)) == 6


def _stopped_in_time(scenario: Callable[[trio.Nursery, Supervisor], Any], sup: Supervisor) -> None:
    """Run `scenario` beside the supervisor, then stop it: `run` must return (a hang fails in virtual time)."""

    async def main() -> None:
        with trio.fail_after(600):
            async with trio.open_nursery() as nursery:
                await nursery.start(sup.run)
                await scenario(nursery, sup)
                await sup.stop()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_child_waiting_out_its_backoff_is_not_restarted_after_stop() -> None:
    """stop() during a restart's backoff: the child stays stopped and `run` returns.

    Found as a node that never exited after SIGTERM: its log had closed, yet
    a child that had failed during the flood came back after the tree was
    stopped, and the supervisor's task group waited for it for ever.
    """
    log: list[str] = []
    probe = Probe("a", log)
    sup = Supervisor([ChildSpec("a", probe.run)], intensity=10, backoff_base_s=4.0, backoff_max_s=4.0)

    async def fail_then_stop(_: trio.Nursery, __: Supervisor) -> None:
        probe.fail()
        await trio.sleep(0.5)  # within the backoff (at least 2 s)

    _stopped_in_time(fail_then_stop, sup)
    assert probe.starts == 1
    assert sup.status()[0].state == "stopped"


def test_a_child_restarting_when_stopped_is_stopped_once_started() -> None:
    """stop() while a restarted child is still starting: it is stopped as soon as it reports ready."""
    log: list[str] = []
    probe = Probe("a", log)

    async def slow_start(*, task_status: TaskStatus[None]) -> None:
        if probe.starts:
            await trio.sleep(5)  # a restart that takes a while to be ready (a listener, a connection)
        await probe.run(task_status=task_status)

    sup = Supervisor([ChildSpec("a", slow_start)], intensity=10, backoff_base_s=0, backoff_max_s=0)

    async def fail_then_stop(_: trio.Nursery, __: Supervisor) -> None:
        probe.fail()
        await trio.sleep(1)  # the restart has begun, not yet ready

    _stopped_in_time(fail_then_stop, sup)
    assert log[-1] == "stop a"
    assert sup.status()[0].state == "stopped"


def test_a_child_failing_while_the_tree_stops_is_not_restarted() -> None:
    """A child that fails while stop() waits for a later one: not restarted, and `run` returns."""
    log: list[str] = []
    first, second = Probe("a", log), Probe("b", log)

    async def slow_stop(*, task_status: TaskStatus[None]) -> None:
        try:
            await second.run(task_status=task_status)
        finally:
            with trio.CancelScope(shield=True):
                first.fail()  # its neighbour fails as this one winds down
                await trio.sleep(1)

    sup = Supervisor(
        [ChildSpec("a", first.run), ChildSpec("b", slow_stop)], intensity=10, backoff_base_s=0, backoff_max_s=0
    )

    async def nothing(_: trio.Nursery, __: Supervisor) -> None:
        await trio.lowlevel.checkpoint()

    _stopped_in_time(nothing, sup)
    assert first.starts == 1
    assert [s.state for s in sup.status()] == ["stopped", "stopped"]
