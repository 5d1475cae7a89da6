"""The lane scheduler: backpressure, strict critical priority, weighted sharing, the fifo baseline.

Timings run on trio's MockClock (the handlers "work" by sleeping in virtual
time), so the bounds asserted are exact, not hoped for.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.testing

from engine.core.model import Lane
from lanes import LaneFull, LaneLimits, LaneScheduler, SchedulerSettings

SETTINGS = SchedulerSettings(
    critical=LaneLimits(100, 2),
    standard=LaneLimits(10_000, 4),
    batch=LaneLimits(10_000, 4),
    workers_total=6,
)


def _virtual(scenario: object) -> object:
    return trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))  # type: ignore[arg-type]


def _flooded(mode: str) -> tuple[int, int, int]:
    """Batch flood of 3,000 items (10 ms each, 5 s of work), a critical item at 1..5 s; its wait (µs)."""

    async def scenario() -> tuple[int, int, int]:
        async def handler(lane: Lane, item: int) -> None:
            await trio.sleep(0.010)

        settings = SchedulerSettings(
            critical=SETTINGS.critical,
            standard=SETTINGS.standard,
            batch=SETTINGS.batch,
            workers_total=SETTINGS.workers_total,
            mode=mode,  # type: ignore[arg-type]
        )
        scheduler: LaneScheduler[int] = LaneScheduler(settings, handler)
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.run)
            for i in range(3000):
                scheduler.admit_nowait(Lane.BATCH, i)
            for i in range(5):
                await trio.sleep(1)
                scheduler.admit_nowait(Lane.CRITICAL, i)
            await trio.sleep(5)
            stats = {s.lane: s for s in scheduler.statistics()}
            nursery.cancel_scope.cancel()
        critical = stats["critical"]
        return critical.done, critical.wait_p99_us, stats["batch"].done

    return _virtual(scenario)  # type: ignore[return-value]


def test_critical_never_waits_behind_a_batch_flood() -> None:
    """Priority mode: a critical item starts at once (a reserved worker), however deep the flood."""
    done, wait_p99_us, batch_done = _flooded("priority")
    assert done == 5
    assert wait_p99_us <= 1  # started in the same instant it was admitted
    assert batch_done > 0  # and the flood still makes progress


def test_fifo_makes_critical_wait_for_the_whole_queue_ahead() -> None:
    """The baseline: in arrival order, the critical item waits behind the billing flood."""
    done, wait_p99_us, _ = _flooded("fifo")
    assert done == 5
    # The one admitted at 1 s starts when the 3,000 ahead of it are done (5 s of work on 6 workers).
    assert wait_p99_us > 3_000_000


def test_weighted_sharing_never_starves_batch() -> None:
    """Standard and batch both flooded, one worker each: starts go 4:1, and batch still gets its share."""

    async def scenario() -> tuple[int, int]:
        order: list[Lane] = []

        async def handler(lane: Lane, item: int) -> None:
            order.append(lane)
            await trio.sleep(0.010)

        settings = SchedulerSettings(
            critical=LaneLimits(10, 1),
            standard=LaneLimits(1000, 1),
            batch=LaneLimits(1000, 1),
            workers_total=2,
        )
        scheduler: LaneScheduler[int] = LaneScheduler(settings, handler)
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.run)
            for i in range(500):
                scheduler.admit_nowait(Lane.STANDARD, i)
                scheduler.admit_nowait(Lane.BATCH, i)
            await trio.sleep(2)
            nursery.cancel_scope.cancel()
        return order.count(Lane.STANDARD), order.count(Lane.BATCH)

    standard, batch = _virtual(scenario)  # type: ignore[misc]
    assert batch > 0
    assert 3.5 <= standard / batch <= 4.5


@pytest.mark.anyio
async def test_a_full_lane_pushes_back_and_drops_nothing() -> None:
    """admit_nowait raises LaneFull; admit waits; every item is handled exactly once."""
    handled: list[int] = []

    all_done = anyio.Event()

    async def handler(lane: Lane, item: int) -> None:
        handled.append(item)
        await anyio.lowlevel.checkpoint()
        if len(handled) == 50:
            all_done.set()

    settings = SchedulerSettings(
        critical=LaneLimits(2, 1), standard=LaneLimits(2, 1), batch=LaneLimits(2, 1), workers_total=2
    )
    scheduler: LaneScheduler[int] = LaneScheduler(settings, handler)
    scheduler.admit_nowait(Lane.BATCH, 0)
    scheduler.admit_nowait(Lane.BATCH, 1)
    with pytest.raises(LaneFull):
        scheduler.admit_nowait(Lane.BATCH, 2)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        for i in range(2, 50):
            await scheduler.admit(Lane.BATCH, i)
        await all_done.wait()
        tg.cancel_scope.cancel()
    assert sorted(handled) == list(range(50))


@pytest.mark.anyio
async def test_a_failing_handler_is_counted_and_the_lane_goes_on() -> None:
    """An item whose handler raises is a counted failure; the next items are served."""

    seen = 0
    all_seen = anyio.Event()

    async def handler(lane: Lane, item: int) -> None:
        nonlocal seen
        seen += 1
        if seen == 5:
            all_seen.set()
        if item == 1:
            raise ValueError("bad item")

    scheduler: LaneScheduler[int] = LaneScheduler(SETTINGS, handler)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        for i in range(5):
            await scheduler.admit(Lane.STANDARD, i)
        await all_seen.wait()
        await anyio.lowlevel.checkpoint()
        tg.cancel_scope.cancel()
    standard = next(s for s in scheduler.statistics() if s.lane == "standard")
    assert (standard.done, standard.failed) == (4, 1)


def test_reserved_critical_workers_must_leave_room() -> None:
    """A configuration where critical takes every slot would starve the other lanes."""
    with pytest.raises(ValueError, match="room"):
        LaneScheduler(
            SchedulerSettings(critical=LaneLimits(1, 4), workers_total=4),
            lambda lane, item: anyio.lowlevel.checkpoint(),
        )


@pytest.mark.anyio
async def test_workers_are_reused_and_a_busy_lane_never_starves_the_loop() -> None:
    """Thousands of items run on at most workers_total tasks; handlers that never wait still let others run."""
    tasks: set[int] = set()
    handled = 0
    all_done = anyio.Event()

    async def handler(lane: Lane, item: int) -> None:
        nonlocal handled
        tasks.add(anyio.get_current_task().id)
        handled += 1  # no await: only the scheduler's own checkpoint lets the ticker run
        if handled == 3000:
            all_done.set()

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    scheduler: LaneScheduler[int] = LaneScheduler(SETTINGS, handler)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        tg.start_soon(ticker)
        for lane, count in ((Lane.CRITICAL, 100), (Lane.STANDARD, 1000), (Lane.BATCH, 1000)):
            for i in range(count):
                scheduler.admit_nowait(lane, i)
        for i in range(900):
            await scheduler.admit(Lane.STANDARD, i)
        await all_done.wait()
        tg.cancel_scope.cancel()
    assert len(tasks) <= SETTINGS.workers_total
    assert ticks > 100
    assert sum(s.done for s in scheduler.statistics()) == 3000


@pytest.mark.anyio
async def test_an_urgent_item_that_starts_at_once_is_served_in_the_callers_task() -> None:
    """`admit(here=True)`: a critical or standard item with a free slot runs in its caller's task (no hand-off
    to a worker, which is a turn of the loop each way); with its slots busy, or in the batch lane, it goes to
    a worker as before, and the lane's counters count it either way."""
    ran_in: dict[int, int] = {}
    release = anyio.Event()

    async def handler(lane: Lane, item: int) -> None:
        ran_in[item] = anyio.get_current_task().id
        if item == 0:
            await release.wait()  # holds the one critical slot

    settings = SchedulerSettings(
        critical=LaneLimits(10, 1), standard=LaneLimits(10, 1), batch=LaneLimits(10, 1), workers_total=3
    )
    scheduler: LaneScheduler[int] = LaneScheduler(settings, handler)
    me = anyio.get_current_task().id
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await scheduler.admit(Lane.STANDARD, 1, here=True)
        await scheduler.admit(Lane.BATCH, 2, here=True)
        tg.start_soon(scheduler.admit, Lane.CRITICAL, 0)  # on a worker: it holds the critical slot
        while 0 not in ran_in:
            await anyio.lowlevel.checkpoint()
        await scheduler.admit(Lane.CRITICAL, 3, here=True)  # the slot is busy: queued for a worker
        assert 3 not in ran_in
        release.set()
        while 3 not in ran_in or 2 not in ran_in:
            await anyio.lowlevel.checkpoint()
        tg.cancel_scope.cancel()
    assert ran_in[1] == me
    assert ran_in[2] != me
    assert ran_in[3] != me
    stats = {s.lane: s for s in scheduler.statistics()}
    assert (stats["standard"].served_in_caller, stats["standard"].done) == (1, 1)
    assert (stats["critical"].served_in_caller, stats["critical"].done) == (0, 2)
    assert stats["batch"].served_in_caller == 0


@pytest.mark.anyio
async def test_fifo_mode_never_serves_in_the_callers_task() -> None:
    """The baseline keeps one queue in arrival order: nothing goes around it."""
    ran_in: list[int] = []

    async def handler(lane: Lane, item: int) -> None:
        ran_in.append(anyio.get_current_task().id)

    settings = SchedulerSettings(
        critical=SETTINGS.critical, standard=SETTINGS.standard, batch=SETTINGS.batch, workers_total=6, mode="fifo"
    )
    scheduler: LaneScheduler[int] = LaneScheduler(settings, handler)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await scheduler.admit(Lane.CRITICAL, 1, here=True)
        while not ran_in:
            await anyio.lowlevel.checkpoint()
        tg.cancel_scope.cancel()
    assert ran_in != [anyio.get_current_task().id]
