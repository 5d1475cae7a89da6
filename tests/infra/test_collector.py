"""The collector policy: survivors frozen out of the automatic collections, old cycles freed by a sweep when idle.

`tick` takes the time as an argument, so the policy is tested without a clock;
`run` on trio's MockClock.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from engine.infra.collector import Collector, CollectorConfig

CONFIG = CollectorConfig(freeze_interval_s=1.0, sweep_interval_s=600.0)


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    """The test process's collector as Python runs it, before and after each test."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def _idle() -> bool:
    return False


def test_begin_freezes_what_starting_left_alive() -> None:
    Collector(CONFIG, _idle).begin(now=0.0)
    assert gc.get_freeze_count() > 1000  # this process's modules, functions and types at least


def test_survivors_are_frozen_at_each_tick_before_a_sweep_is_due() -> None:
    collector = Collector(CONFIG, _idle)
    collector.begin(now=0.0)
    frozen = gc.get_freeze_count()
    kept = [[i] for i in range(500)]  # tracked objects that outlive the tick
    assert collector.tick(now=1.0) == "froze"
    assert gc.get_freeze_count() >= frozen + len(kept)
    assert collector.sweeps == 0


def test_a_frozen_cycle_is_freed_by_the_sweep_and_not_before() -> None:
    collector = Collector(CONFIG, _idle)
    collector.begin(now=0.0)
    cycle = _Cycle()
    alive = weakref.ref(cycle)
    assert collector.tick(now=1.0) == "froze"
    del cycle
    gc.collect()  # an ordinary full collection does not see frozen objects
    assert alive() is not None
    assert collector.tick(now=600.0) == "swept"
    assert alive() is None
    assert collector.sweeps == 1
    assert gc.get_freeze_count() > 0  # frozen again after the sweep


def test_a_busy_node_is_swept_only_once_the_sweep_is_twice_overdue() -> None:
    busy = [True]
    collector = Collector(CONFIG, lambda: busy[0])
    collector.begin(now=0.0)
    assert collector.tick(now=900.0) == "froze"  # due, but messages are in flight
    assert collector.tick(now=1200.0) == "swept"  # twice the interval: swept anyway
    assert collector.tick(now=1800.0) == "froze"
    busy[0] = False
    assert collector.tick(now=1801.0) == "swept"  # due and idle


def test_run_ticks_every_freeze_interval_and_leaves_nothing_frozen_when_it_ends() -> None:
    async def scenario() -> tuple[int, int]:
        collector = Collector(CollectorConfig(freeze_interval_s=1.0, sweep_interval_s=2.5), _idle)
        async with trio.open_nursery() as nursery:
            await nursery.start(collector.run)
            frozen = gc.get_freeze_count()
            await trio.sleep(3.5)  # ticks at 1, 2, 3: the one at 3 sweeps
            nursery.cancel_scope.cancel()
        return frozen, collector.sweeps

    frozen, sweeps = trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    assert frozen > 0
    assert sweeps == 1
    assert gc.get_freeze_count() == 0


def test_off_it_freezes_nothing() -> None:
    async def scenario() -> int:
        collector = Collector(CollectorConfig(enabled=False), _idle)
        async with trio.open_nursery() as nursery:
            await nursery.start(collector.run)
            await trio.sleep(5)
            frozen = gc.get_freeze_count()
            nursery.cancel_scope.cancel()
        return frozen

    assert trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0)) == 0
