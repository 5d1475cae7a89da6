"""How many durable appends per second, at what latency, and how fast is recovery?

Every append is on disk (fdatasync) before it returns, for every contender:
- Vigil's log: group commit, 1/8/64 concurrent writers as anyio tasks;
- SQLite: WAL mode, synchronous=FULL, one transaction per record, the same
  number of writer threads, each with its own connection;
- the `eventsourcing` package's SQLite recorder (WAL mode), one
  insert_events call per record, the same number of threads.
Plus: p99 of a critical append while 32 writers flood the batch lane, against
this machine's own fdatasync p99 measured in the same run; and recovery speed
(records/s) on a large log: after a crash (every record's head decoded to
rebuild the indexes, CRCs checked, the chain verified from the checkpoint),
after a clean stop (indexes loaded, every CRC checked), and with the whole
hash chain verified (`vigil wal verify`).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
from _harness import arguments, fail_if
from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteAggregateRecorder, SQLiteDatastore
from rich.console import Console
from rich.table import Table

from engine.core.decode import Decoder
from engine.core.feedgen import generate_feed
from engine.core.model import Envelope, Lane
from engine.infra.config import WalConfig
from engine.wal import (
    GENESIS_HASH,
    SEGMENT_MAGIC,
    Checkpoint,
    CheckpointStore,
    LogRecord,
    OSFiles,
    encode_frame,
    open_wal,
    scan_log,
    segment_name,
)

_ENCODER = msgspec.msgpack.Encoder()


def _envelopes(count: int) -> list[Envelope]:
    decoder = Decoder()
    base = [decoder.hl7(raw, received_at="2026-11-24T07:00:00Z", source="bench") for raw in generate_feed(500, seed=4)]
    return [
        msgspec.structs.replace(base[i % len(base)], message_id=f"bench:{i}", lane=Lane.STANDARD) for i in range(count)
    ]


def _pct(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


class Result(msgspec.Struct):
    contender: str
    writers: int
    appends_per_s: float
    p50_ms: float
    p99_ms: float


def _result(name: str, writers: int, latencies: list[float], elapsed: float) -> Result:
    return Result(
        name,
        writers,
        round(len(latencies) / elapsed, 1),
        round(_pct(latencies, 0.5) * 1000, 3),
        round(_pct(latencies, 0.99) * 1000, 3),
    )


# -- Vigil -------------------------------------------------------------------


async def _vigil(directory: Path, writers: int, duration: float, envs: list[Envelope]) -> Result:
    latencies: list[float] = []
    source = iter(envs)
    async with open_wal(directory, WalConfig(commit_delay_ms=0)) as wal:
        deadline = time.perf_counter() + duration
        started = time.perf_counter()

        async def writer() -> None:
            while time.perf_counter() < deadline:
                env = next(source)
                t0 = time.perf_counter()
                await wal.append([env])
                latencies.append(time.perf_counter() - t0)

        async with anyio.create_task_group() as tg:
            for _ in range(writers):
                tg.start_soon(writer)
        elapsed = time.perf_counter() - started
    return _result("vigil wal", writers, latencies, elapsed)


# -- threaded peers ------------------------------------------------------------


def _threads(writers: int, duration: float, make: Callable[[], Callable[[int], None]]) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(10**12))
    deadline = time.perf_counter() + duration

    def work() -> None:
        insert = make()
        mine: list[float] = []
        while time.perf_counter() < deadline:
            with lock:
                i = next(counter)
            t0 = time.perf_counter()
            insert(i)
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - started


def _sqlite(directory: Path, writers: int, duration: float, body: bytes) -> Result:
    path = directory / "peer.sqlite"
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE log (lsn INTEGER PRIMARY KEY, message_id TEXT UNIQUE, body BLOB)")
    setup.close()

    def make() -> Callable[[int], None]:
        conn = sqlite3.connect(path, timeout=120, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous=FULL")

        def insert(i: int) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO log (message_id, body) VALUES (?, ?)", (f"bench:{i}", body))
            conn.execute("COMMIT")

        return insert

    latencies, elapsed = _threads(writers, duration, make)
    return _result("sqlite WAL, synchronous=FULL", writers, latencies, elapsed)


def _eventsourcing(directory: Path, writers: int, duration: float, body: bytes) -> tuple[Result, str]:
    datastore = SQLiteDatastore(str(directory / "es.sqlite"), pool_size=writers, max_overflow=writers, lock_timeout=120)
    recorder = SQLiteAggregateRecorder(datastore)
    recorder.create_table()
    with datastore.transaction(commit=False) as cursor:
        cursor.execute("PRAGMA synchronous")
        synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(cursor.fetchone()[0], "?")

    def make() -> Callable[[int], None]:
        def insert(_i: int) -> None:
            recorder.insert_events([StoredEvent(uuid.uuid4(), 1, "vigil.bench", body)])

        return insert

    latencies, elapsed = _threads(writers, duration, make)
    datastore.close()
    return _result(f"eventsourcing SQLite (synchronous={synchronous})", writers, latencies, elapsed), synchronous


# -- critical under load, and the machine's fsync ------------------------------


def _fsync_p99(directory: Path, rounds: int) -> float:
    path = directory / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    latencies = []
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            os.write(fd, b"x" * 512)
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
    return _pct(latencies, 0.99) * 1000


async def _critical_under_load(directory: Path, duration: float, envs: list[Envelope]) -> tuple[float, float, int]:
    batch = iter(msgspec.structs.replace(e, lane=Lane.BATCH) for e in envs)
    critical_latencies: list[float] = []
    async with open_wal(directory, WalConfig()) as wal:
        deadline = time.perf_counter() + duration

        async def flood() -> None:
            while time.perf_counter() < deadline:
                await wal.append([next(batch)])

        async def critical() -> None:
            n = 0
            while time.perf_counter() < deadline:
                env = msgspec.structs.replace(envs[0], message_id=f"critical:{n}", lane=Lane.CRITICAL)
                n += 1
                t0 = time.perf_counter()
                await wal.append([env])
                critical_latencies.append(time.perf_counter() - t0)
                await anyio.sleep(0.002)

        async with anyio.create_task_group() as tg:
            for _ in range(32):
                tg.start_soon(flood)
            tg.start_soon(critical)
        batch_records = wal.statistics().appended_records - len(critical_latencies)
    return _pct(critical_latencies, 0.5) * 1000, _pct(critical_latencies, 0.99) * 1000, batch_records


# -- recovery ----------------------------------------------------------------


def _build_log(directory: Path, count: int, envs: list[Envelope]) -> int:
    """Write a valid log of `count` records directly (no fsync per record): the recovery input."""
    directory.mkdir(parents=True)
    prev, size = GENESIS_HASH, 0
    segment_max = 64 * 1024 * 1024
    out = None
    lsn = 0
    try:
        for lsn in range(1, count + 1):
            env = msgspec.structs.replace(envs[lsn % len(envs)], message_id=f"rec:{lsn}")
            if out is None or size > segment_max:
                if out is not None:
                    out.close()
                out = (directory / segment_name(lsn)).open("wb")
                out.write(SEGMENT_MAGIC)
                size = len(SEGMENT_MAGIC)
            patients = (env.patient,) if env.patient else ()
            frame, prev = encode_frame(
                LogRecord(lsn, "2026-11-24T07:00:00Z", 0, 0, env.message_id, patients, prev, env)
            )
            out.write(frame)
            size += len(frame)
    finally:
        if out is not None:
            out.close()
    CheckpointStore(directory, OSFiles()).save(Checkpoint(count, prev, "2026-11-24T07:00:00Z"))
    return sum(p.stat().st_size for p in directory.glob("*.seg"))


async def _recover(directory: Path) -> float:
    t0 = time.perf_counter()
    async with open_wal(directory):
        pass
    return time.perf_counter() - t0


def main() -> None:
    args = arguments(__doc__ or "")
    quick = args.quick
    duration = 0.3 if quick else 2.0
    recovery_records = 30_000 if quick else 1_000_000
    envs = _envelopes(400_000 if not quick else 40_000)
    body = _ENCODER.encode(envs[0])
    console = Console(width=120)
    results: list[Result] = []
    synchronous = "?"
    root = Path(tempfile.mkdtemp(prefix="vigil-bench-", dir=os.environ.get("VIGIL_BENCH_DIR")))
    try:
        for writers in (1, 8, 64):
            run_dir = root / f"w{writers}"
            results.append(anyio.run(_vigil, run_dir / "vigil", writers, duration, envs))
            (run_dir / "peers").mkdir(parents=True)
            results.append(_sqlite(run_dir / "peers", writers, duration, body))
            es, synchronous = _eventsourcing(run_dir / "peers", writers, duration, body)
            results.append(es)
        fsync_p99 = _fsync_p99(root, 100 if quick else 1000)
        crit_p50, crit_p99, flood_records = anyio.run(_critical_under_load, root / "critical", duration * 2, envs)
        log_bytes = _build_log(root / "recovery", recovery_records, envs)
        recover_s = anyio.run(_recover, root / "recovery")  # no saved index: as after a crash
        restart_s = anyio.run(_recover, root / "recovery")  # the index saved by the clean stop above
        t0 = time.perf_counter()
        full = scan_log(root / "recovery", OSFiles())
        verify_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)

    table = Table(title="Durable appends (every append fsync'd before it returns)")
    for name in ("contender", "writers", "appends/s", "p50 ms", "p99 ms"):
        table.add_column(name, justify="left" if name == "contender" else "right")
    for r in results:
        table.add_row(r.contender, str(r.writers), f"{r.appends_per_s:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}")
    console.print(table)
    by = {(r.contender.split(" ")[0], r.writers): r for r in results}
    ratios = {
        f"vigil_vs_sqlite_{w}_writers": round(by["vigil", w].appends_per_s / by["sqlite", w].appends_per_s, 1)
        for w in (1, 8, 64)
    }
    ratios |= {
        f"vigil_vs_eventsourcing_{w}_writers": round(
            by["vigil", w].appends_per_s / by["eventsourcing", w].appends_per_s, 1
        )
        for w in (1, 8, 64)
    }
    extra: dict[str, Any] = {
        **ratios,
        "machine_fdatasync_p99_ms": round(fsync_p99, 3),
        "critical_append_under_batch_flood_p50_ms": round(crit_p50, 3),
        "critical_append_under_batch_flood_p99_ms": round(crit_p99, 3),
        "critical_p99_over_fsync_p99": round(crit_p99 / fsync_p99, 2),
        "batch_flood_records": flood_records,
        "recovery_records": recovery_records,
        "recovery_log_bytes": log_bytes,
        "recovery_after_crash_records_per_s": round(recovery_records / recover_s),
        "restart_after_clean_stop_records_per_s": round(recovery_records / restart_s),
        "full_chain_verify_records_per_s": round(full.records / verify_s),
        "eventsourcing_sqlite_synchronous": synchronous,
        "goals": "64 writers >= 10x SQLite; critical p99 <= 2x fdatasync p99; recovery >= 500,000 records/s",
    }
    for key, value in extra.items():
        console.print(f"{key}: [bold]{value}[/]")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"title": "WAL durability and recovery", "results": msgspec.to_builtins(results), **extra}
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(doc)) + b"\n")
    fail_if(full.records != recovery_records, "the recovery log did not verify")


if __name__ == "__main__":
    main()
