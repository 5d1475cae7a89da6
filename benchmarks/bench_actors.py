"""How fast are Vigil's actors: tell to one actor, ask latency, and a 10,000-actor fan-out?

Against Pykka (threading actors), Thespian (its single-threaded base) and a
plain asyncio queue-per-actor baseline, in the same run. Also the memory an
idle actor costs (tracemalloc, per actor, over many).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import msgspec
import pykka
from _harness import arguments, fail_if
from rich.console import Console
from rich.table import Table
from thespian.actors import Actor as ThespianActor
from thespian.actors import ActorSystem

from actors import Actor, Applied, PatientActors, PatientRecord, Reply, ask


class Row(msgspec.Struct):
    contender: str
    tell_one_per_s: float
    ask_p50_us: float
    ask_p99_us: float
    fanout_per_s: float


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


# -- Vigil -------------------------------------------------------------------------


async def _vigil(messages: int, asks: int, actors: int, per_actor: int) -> Row:
    counted = 0

    async def count(batch: list[Any]) -> None:
        nonlocal counted
        for m in batch:
            if isinstance(m, Reply):
                m.set(counted)
            else:
                counted += 1

    one: Actor[Any] = Actor(count, capacity=4096, batch_max=1024)
    async with anyio.create_task_group() as tg:
        await tg.start(one.run)
        t0 = time.perf_counter()
        for i in range(messages):
            await one.tell(i)
        await ask(one, lambda r: r, timeout_s=60)
        tell_rate = messages / (time.perf_counter() - t0)
        latencies = []
        for _ in range(asks):
            t = time.perf_counter()
            await ask(one, lambda r: r, timeout_s=60)
            latencies.append((time.perf_counter() - t) * 1e6)
        one.close()
    fanout = await _vigil_fanout(actors, per_actor)
    return Row("vigil (anyio/asyncio)", tell_rate, _pct(latencies, 50), _pct(latencies, 99), fanout)


async def _vigil_fanout(actors: int, per_actor: int) -> float:
    done = anyio.Event()
    remaining = actors * per_actor

    async def count(batch: list[int]) -> None:
        nonlocal remaining
        remaining -= len(batch)
        if remaining == 0:
            done.set()

    mailboxes: list[Actor[int]] = [Actor(count, capacity=per_actor, batch_max=per_actor) for _ in range(actors)]
    async with anyio.create_task_group() as tg:
        for a in mailboxes:
            tg.start_soon(a.run)
        t0 = time.perf_counter()
        for i in range(per_actor):
            for a in mailboxes:
                a.tell_nowait(i)
        await done.wait()
        rate = actors * per_actor / (time.perf_counter() - t0)
        for a in mailboxes:
            a.close()
    return rate


# -- asyncio baseline -----------------------------------------------------------------


async def _asyncio(messages: int, asks: int, actors: int, per_actor: int) -> Row:
    queue: asyncio.Queue[Any] = asyncio.Queue(4096)
    counted = 0

    async def consume() -> None:
        nonlocal counted
        while True:
            m = await queue.get()
            if isinstance(m, asyncio.Future):
                m.set_result(counted)
            else:
                counted += 1

    task = asyncio.create_task(consume())
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    for i in range(messages):
        await queue.put(i)
    future: asyncio.Future[int] = loop.create_future()
    await queue.put(future)
    await future
    tell_rate = messages / (time.perf_counter() - t0)
    latencies = []
    for _ in range(asks):
        t = time.perf_counter()
        future = loop.create_future()
        await queue.put(future)
        await future
        latencies.append((time.perf_counter() - t) * 1e6)
    task.cancel()
    # fan-out
    remaining = actors * per_actor
    done = asyncio.Event()

    async def drain(q: asyncio.Queue[int]) -> None:
        nonlocal remaining
        while True:
            await q.get()
            remaining -= 1
            if remaining == 0:
                done.set()

    queues: list[asyncio.Queue[int]] = [asyncio.Queue(per_actor) for _ in range(actors)]
    tasks = [asyncio.create_task(drain(q)) for q in queues]
    t0 = time.perf_counter()
    for i in range(per_actor):
        for q in queues:
            q.put_nowait(i)
    await done.wait()
    fanout = actors * per_actor / (time.perf_counter() - t0)
    for t in tasks:
        t.cancel()
    return Row("asyncio queue per actor", tell_rate, _pct(latencies, 50), _pct(latencies, 99), fanout)


# -- Pykka ---------------------------------------------------------------------------


class _PykkaCounter(pykka.ThreadingActor):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_receive(self, message: Any) -> Any:
        if message == "ask":
            return self.count
        self.count += 1
        return None


def _pykka(messages: int, asks: int, actors: int, per_actor: int) -> Row:
    ref = _PykkaCounter.start()
    t0 = time.perf_counter()
    for i in range(messages):
        ref.tell(i)
    ref.ask("ask")
    tell_rate = messages / (time.perf_counter() - t0)
    latencies = []
    for _ in range(asks):
        t = time.perf_counter()
        ref.ask("ask")
        latencies.append((time.perf_counter() - t) * 1e6)
    ref.stop()
    refs = [_PykkaCounter.start() for _ in range(actors)]
    t0 = time.perf_counter()
    for i in range(per_actor):
        for r in refs:
            r.tell(i)
    for r in refs:
        r.ask("ask")
    fanout = actors * per_actor / (time.perf_counter() - t0)
    pykka.ActorRegistry.stop_all()
    return Row("pykka (threads)", tell_rate, _pct(latencies, 50), _pct(latencies, 99), fanout)


# -- Thespian --------------------------------------------------------------------------


class _ThespianCounter(ThespianActor):  # type: ignore[misc]
    count = 0

    def receiveMessage(self, message: Any, sender: Any) -> None:  # noqa: N802 -- Thespian's API
        if message == "ask":
            self.send(sender, self.count)
        elif isinstance(message, int):
            self.count += 1


def _thespian(messages: int, asks: int, actors: int, per_actor: int) -> Row:
    system = ActorSystem("simpleSystemBase")
    try:
        one = system.createActor(_ThespianCounter)
        t0 = time.perf_counter()
        for i in range(messages):
            system.tell(one, i)
        system.ask(one, "ask", 60)
        tell_rate = messages / (time.perf_counter() - t0)
        latencies = []
        for _ in range(asks):
            t = time.perf_counter()
            system.ask(one, "ask", 60)
            latencies.append((time.perf_counter() - t) * 1e6)
        many = [system.createActor(_ThespianCounter) for _ in range(actors)]
        t0 = time.perf_counter()
        for i in range(per_actor):
            for a in many:
                system.tell(a, i)
        for a in many:
            system.ask(a, "ask", 60)
        fanout = actors * per_actor / (time.perf_counter() - t0)
    finally:
        system.shutdown()
    return Row("thespian (simpleSystemBase)", tell_rate, _pct(latencies, 50), _pct(latencies, 99), fanout)


def _idle_actor_bytes(count: int) -> float:
    """Memory one idle Vigil actor holds (mailbox, events, its task), averaged over `count`."""

    async def hold() -> float:
        async def nothing(_batch: list[int]) -> None:
            return None

        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        mailboxes = [Actor(nothing, capacity=256) for _ in range(count)]
        async with anyio.create_task_group() as tg:
            for a in mailboxes:
                tg.start_soon(a.run)
            await anyio.sleep(0.01)
            after = tracemalloc.take_snapshot()
            for a in mailboxes:
                a.close()
        tracemalloc.stop()
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        return grown / count

    return anyio.run(hold)


class _DiscardingSource:
    """Snapshots go to disk in the node; here they are dropped, so only the registry's memory counts."""

    async def load(self, _patient: str) -> tuple[PatientRecord | None, Sequence[Applied]]:
        return None, ()

    async def save(self, _record: PatientRecord) -> None:
        return None


class _NoQuarantine:
    async def quarantine(self, _patient: str, item: Applied, reason: str) -> None:
        raise RuntimeError(f"poison at {item.lsn}: {reason}")


def _passivated_patient_bytes(count: int) -> tuple[float, float]:
    """Memory per active patient actor (one record applied), and what is left per patient once passivated."""

    async def measure() -> tuple[float, float]:
        registry = PatientActors(_DiscardingSource(), _NoQuarantine(), idle_timeout_s=0.2, active_max=count + 1)
        async with anyio.create_task_group() as tg:
            await tg.start(registry.run)
            tracemalloc.start()
            before = tracemalloc.take_snapshot()
            for n in range(count):
                await registry.deliver(f"GENHOSP|MRN{n:07d}", Applied(n + 1, "t", f"m{n}", ()))
            await anyio.sleep(0.05)
            active = tracemalloc.take_snapshot()
            while registry.statistics().active:  # noqa: ASYNC110 -- a benchmark polling a counter
                await anyio.sleep(0.1)
            gc.collect()
            passivated = tracemalloc.take_snapshot()
            tracemalloc.stop()
            tg.cancel_scope.cancel()
        grown_active = sum(s.size_diff for s in active.compare_to(before, "filename"))
        grown_after = sum(s.size_diff for s in passivated.compare_to(before, "filename"))
        return grown_active / count, max(0.0, grown_after / count)

    return anyio.run(measure)


def main() -> None:
    args = arguments(__doc__ or "")
    quick = args.quick
    messages = 50_000 if quick else 1_000_000
    asks = 500 if quick else 5_000
    actors, per_actor = (500, 20) if quick else (10_000, 20)
    pykka_actors = 200 if quick else 1_000  # one OS thread per Pykka actor
    runs: list[tuple[str, Callable[[], Row]]] = [
        ("vigil", lambda: anyio.run(_vigil, messages, asks, actors, per_actor)),
        ("asyncio", lambda: asyncio.run(_asyncio(messages, asks, actors, per_actor))),
        ("pykka", lambda: _pykka(messages // 5, asks, pykka_actors, per_actor)),
        ("thespian", lambda: _thespian(messages // 5, asks, actors, per_actor)),
    ]
    rows = [run() for _, run in runs]
    idle_bytes = _idle_actor_bytes(2_000 if quick else 10_000)
    active_patient_bytes, passivated_bytes = _passivated_patient_bytes(1_000 if quick else 10_000)
    table = Table(title="Actors: tell to one actor, ask latency, fan-out (10,000 actors x 20 messages at full size)")
    for name in ("contender", "tell one (msgs/s)", "ask p50 (µs)", "ask p99 (µs)", "fan-out (msgs/s)"):
        table.add_column(name, justify="left" if name == "contender" else "right")
    for r in rows:
        table.add_row(
            r.contender,
            f"{r.tell_one_per_s:,.0f}",
            f"{r.ask_p50_us:,.1f}",
            f"{r.ask_p99_us:,.1f}",
            f"{r.fanout_per_s:,.0f}",
        )
    console = Console(width=120)
    console.print(table)
    vigil, base, pyk, thes = rows
    extra: dict[str, Any] = {
        "vigil_vs_pykka_tell": round(vigil.tell_one_per_s / pyk.tell_one_per_s, 1),
        "vigil_vs_thespian_tell": round(vigil.tell_one_per_s / thes.tell_one_per_s, 1),
        "vigil_vs_asyncio_tell": round(vigil.tell_one_per_s / base.tell_one_per_s, 1),
        "vigil_vs_pykka_fanout": round(vigil.fanout_per_s / pyk.fanout_per_s, 1),
        "vigil_vs_thespian_fanout": round(vigil.fanout_per_s / thes.fanout_per_s, 1),
        "idle_actor_bytes": round(idle_bytes),
        "active_patient_actor_bytes": round(active_patient_bytes),
        "passivated_patient_bytes": round(passivated_bytes),
        "pykka_fanout_actors": pykka_actors,
        "goals": (
            ">= 1,000,000 msgs/s to one actor and in the fan-out; "
            "<= 6 KB per idle actor; <= 2 KB per passivated patient"
        ),
    }
    for key, value in extra.items():
        console.print(f"{key}: [bold]{value}[/]")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"title": "actors", "results": msgspec.to_builtins(rows), **extra}
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(doc)) + b"\n")
    fail_if(vigil.tell_one_per_s <= 0 or vigil.fanout_per_s <= 0, "Vigil's actors measured nothing")


if __name__ == "__main__":
    main()
