"""Does a STAT result wait behind a billing flood? End to end, idle, flooded, and flooded in fifo mode.

Each message goes the node's way: classification from raw bytes, admission
into its lane (backpressure when full), then a lane worker parses it, appends
it to the durable log (fsync'd, group commit) and hands it to its patient's
actor. Critical messages (STAT potassium results) arrive at a steady rate;
the flood is billing (DFT^P03) admitted as fast as the batch lane accepts.
Latency is from arrival to applied in the patient's record.

Three runs: idle (no flood), flooded with the lanes, and flooded in `fifo`
mode (one queue in arrival order: what ordinary integration engines do).
`--plot PATH` writes the three latency distributions as a PNG.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec
from _harness import arguments, fail_if
from rich.console import Console
from rich.table import Table

from actors import Applied, PatientActors, PatientRecord
from engine.core.decode import Decoder
from engine.core.feedgen import FeedMix, generate_feed
from engine.core.model import Lane
from engine.infra.config import WalConfig
from engine.wal import WriteAheadLog, open_wal
from lanes import Classifier, LaneLimits, LaneScheduler, SchedulerSettings


class LogSource:
    """Activation from the log itself (no snapshots): what the node's source does, minus snapshots."""

    def __init__(self, wal: WriteAheadLog) -> None:
        self._wal = wal

    async def load(self, patient: str) -> tuple[PatientRecord | None, Sequence[Applied]]:
        records = self._wal.read_patient(patient)
        return None, [Applied(r.lsn, r.recorded_at, r.message_id, r.envelope.events) for r in records]

    async def load_after(self, patient: str, after_lsn: int) -> Sequence[Applied]:
        records = self._wal.read_patient(patient, after_lsn=after_lsn)
        return [Applied(r.lsn, r.recorded_at, r.message_id, r.envelope.events) for r in records]

    def load_now(
        self, _patient: str, _in_hand: Applied | None = None
    ) -> tuple[PatientRecord | None, Sequence[Applied]] | None:
        return None  # every load reads the log, in `load`

    async def save(self, _record: PatientRecord) -> None:
        return None


class NoQuarantine:
    async def quarantine(self, _patient: str, item: Applied, reason: str) -> None:
        raise RuntimeError(f"unexpected poison record at LSN {item.lsn}: {reason}")


class Result(msgspec.Struct):
    run: str
    critical_sent: int
    critical_done: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    batch_done_per_s: float


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def _run(
    name: str,
    mode: str,
    *,
    flood: bool,
    duration_s: float,
    critical_rate_hz: float,
    stat: list[bytes],
    bills: list[bytes],
) -> tuple[Result, list[float]]:
    directory = Path(tempfile.mkdtemp(prefix="vigil-lanes-"))
    classifier = Classifier()
    decoder = Decoder(classifier)
    latencies: list[float] = []
    batch_done = 0
    defaults = SchedulerSettings()
    settings = SchedulerSettings(
        critical=defaults.critical,
        standard=defaults.standard,
        batch=LaneLimits(2048, defaults.batch.workers),  # a smaller queue: fifo mode must finish in time
        workers_total=defaults.workers_total,
        mode=mode,  # type: ignore[arg-type]
    )
    try:
        async with open_wal(directory, WalConfig()) as wal, anyio.create_task_group() as tg:
            patients = PatientActors(LogSource(wal), NoQuarantine())
            await tg.start(patients.run)

            async def handle(lane: Lane, item: tuple[bytes, float]) -> None:
                nonlocal batch_done
                raw, arrived = item
                env = decoder.hl7(raw, received_at="bench", source="bench")
                [position] = await wal.append([env])
                if env.patient is not None:
                    applied = Applied(position.lsn, position.recorded_at or "", env.message_id, env.events, env.lane)
                    await patients.deliver(env.patient, applied)
                if lane is Lane.CRITICAL:
                    latencies.append(time.perf_counter() - arrived)
                else:
                    batch_done += 1

            scheduler: LaneScheduler[tuple[bytes, float]] = LaneScheduler(settings, handle)
            await tg.start(scheduler.run)
            deadline = time.perf_counter() + duration_s

            async def flood_bills() -> None:
                i = 0
                while time.perf_counter() < deadline:
                    raw = bills[i % len(bills)].replace(b"|BILL", b"|BILL%d" % i, 1)  # a fresh message id
                    await scheduler.admit(classifier.classify_hl7(raw).lane, (raw, time.perf_counter()))
                    i += 1

            if flood:
                tg.start_soon(flood_bills)
                await anyio.sleep(min(1.0, duration_s / 4))  # let the flood fill the lane first
            sent = 0
            started = time.perf_counter()
            while time.perf_counter() < deadline:
                raw = stat[sent % len(stat)].replace(b"|LAB", b"|LAB%d" % sent, 1)
                await scheduler.admit(classifier.classify_hl7(raw).lane, (raw, time.perf_counter()))
                sent += 1
                await anyio.sleep(1 / critical_rate_hz)
            elapsed = time.perf_counter() - started
            await anyio.sleep(0.5)  # let the last critical messages land
            tg.cancel_scope.cancel()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    ms = [v * 1000 for v in latencies]
    result = Result(
        name,
        sent,
        len(ms),
        round(_pct(ms, 50), 3),
        round(_pct(ms, 99), 3),
        round(_pct(ms, 99.9), 3),
        round(batch_done / elapsed, 1),
    )
    return result, ms


def _plot(path: Path, distributions: dict[str, list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, values in distributions.items():
        if not values:
            continue
        ordered = sorted(values)
        ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=f"{name} (n={len(values)})")
    ax.set_xscale("log")
    ax.set_xlabel("critical message latency, arrival to applied (ms, log scale)")
    ax.set_ylabel("fraction of critical messages")
    ax.set_title("STAT results: idle, under a billing flood with lanes, and in fifo order")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser_args = arguments(__doc__ or "")
    quick = parser_args.quick
    duration = 1.5 if quick else 8.0
    rate = 50.0
    feed = generate_feed(2000, seed=9, mix=FeedMix(0, 0, 1, 0, 0, 0, 0))
    stat = [raw for raw in feed if Classifier().classify_hl7(raw).lane is Lane.CRITICAL]
    bills = generate_feed(500, seed=10, mix=FeedMix(0, 0, 0, 0, 0, 0, 1))
    runs: list[tuple[str, str, bool]] = [
        ("idle", "priority", False),
        ("flooded, lanes", "priority", True),
        ("flooded, fifo", "fifo", True),
    ]
    results: list[Result] = []
    distributions: dict[str, list[float]] = {}
    for name, mode, flood in runs:
        run = functools.partial(
            _run, name, mode, flood=flood, duration_s=duration, critical_rate_hz=rate, stat=stat, bills=bills
        )
        result, ms = anyio.run(run)
        results.append(result)
        distributions[name] = ms
    table = Table(title="Critical latency, arrival to applied in the patient's record (ms)")
    for column in ("run", "critical sent", "done", "p50", "p99", "p99.9", "batch done/s"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for r in results:
        table.add_row(
            r.run,
            str(r.critical_sent),
            str(r.critical_done),
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.p999_ms:.2f}",
            f"{r.batch_done_per_s:,.0f}",
        )
    console = Console(width=120)
    console.print(table)
    idle, lanes, fifo = results
    extra: dict[str, Any] = {
        "flooded_p99_over_idle_p99": round(lanes.p99_ms / idle.p99_ms, 2),
        "fifo_p99_over_lanes_p99": round(fifo.p99_ms / lanes.p99_ms, 1) if fifo.critical_done else "fifo served none",
        "fifo_critical_not_done": fifo.critical_sent - fifo.critical_done,
        "goals": "flooded p99 <= 1.5x idle p99; >= 50x better than fifo; batch makes progress",
    }
    for key, value in extra.items():
        console.print(f"{key}: [bold]{value}[/]")
    if parser_args.json is not None:
        parser_args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"title": "lanes end to end", "results": msgspec.to_builtins(results), **extra}
        parser_args.json.write_bytes(msgspec.json.format(msgspec.json.encode(doc)) + b"\n")
    plot = parser_args.plot or (parser_args.json.with_suffix(".png") if parser_args.json else None)
    if plot is not None:
        _plot(plot, distributions)
        console.print(f"plot: {plot}")
    fail_if(lanes.batch_done_per_s <= 0, "the batch lane made no progress under the flood")
    fail_if(idle.critical_done == 0 or lanes.critical_done == 0, "no critical message completed")


if __name__ == "__main__":
    main()
