"""How fast does the read side follow the log into PostgreSQL, and how soon does a critical result show?

Three measures, each against a real PostgreSQL (VIGIL_TEST_PG_DSN, else
127.0.0.1:5432, else a throwaway server) in a database made for the run and
dropped after it:

- catch-up: a log of the realistic mix (mostly billing) applied from scratch
  by every projection, in events/s; beside it, the same run's plain COPY of
  as many rows into an indexed table (the machine's bulk-load ceiling), so the
  ratio is from one run;
- steady lag: records appended (fsync'd) at 10,000/s for a while, the runner
  following; the time from each append to its commit in PostgreSQL (p50/p99);
- critical visibility: with a batch backlog the runner is still working
  through, a critical result appended and notified as the node does; the
  time from its durable append (its ACK) until a reader sees it in the
  critical worklist;
- what the read side costs a node: `vigil run --stdin` over one feed, without
  and with a DSN (the runner shares the node's process), as a ratio.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import msgspec
from _harness import arguments, fail_if
from rich.console import Console
from rich.table import Table

from engine.core.decode import Decoder
from engine.core.feedgen import FeedMix, generate_feed
from engine.core.model import Coded, Envelope, Kind, Lane, ResultReported
from engine.infra.config import ProjectionsConfig, WalConfig
from engine.projections import ProjectionRunner, Record, connect, migrate
from engine.wal import WriteAheadLog, open_wal
from tests.harness.pg_server import (
    admin_dsn,  # the tests' PostgreSQL finder (bin/bench puts the repository on the path)
)

_CRITICAL = ("HH", "LL", "AA")
VIGIL = str(Path(__file__).resolve().parents[1] / "bin" / "vigil")


def _envelopes(count: int, seed: int, mix: FeedMix | None = None) -> list[Envelope]:
    """`count` decoded messages: a few thousand parsed, then repeated under new ids (parsing is not measured)."""
    decoder = Decoder()
    base = [decoder.hl7(raw, received_at="t", source="bench") for raw in generate_feed(min(count, 5000), seed, mix)]
    return [
        msgspec.structs.replace(base[i % len(base)], message_id=f"{base[i % len(base)].message_id}#{i}")
        for i in range(count)
    ]


async def _append(wal: WriteAheadLog, envelopes: Sequence[Envelope], group: int = 512) -> None:
    for start in range(0, len(envelopes), group):
        await wal.append(envelopes[start : start + group])


def _runner(wal: WriteAheadLog, dsn: str, schema: str) -> ProjectionRunner:
    config = ProjectionsConfig(schema=schema)
    return ProjectionRunner(wal, config, dsn, base=Path(), critical_flags=_CRITICAL)


async def _catch_up(dsn: str, scratch: Path, records: int) -> dict[str, Any]:
    envelopes = _envelopes(records, seed=5)
    events = sum(len(e.events) for e in envelopes)
    async with open_wal(scratch / "catch-up", WalConfig()) as wal:
        await _append(wal, envelopes)
        t0 = time.perf_counter()
        await _runner(wal, dsn, "catch_up").catch_up()
        elapsed = time.perf_counter() - t0
    rows = await _count_rows(dsn, "catch_up")
    copy_rate = await _copy_ceiling(dsn, rows)
    return {
        "records": records,
        "events": events,
        "rows": rows,
        "seconds": round(elapsed, 2),
        "events_per_s": round(events / elapsed),
        "rows_per_s": round(rows / elapsed),
        "copy_ceiling_rows_per_s": round(copy_rate),
    }


async def _count_rows(dsn: str, schema: str) -> int:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        tables = ["patients", "encounters", "allergies", "medications", "results", "result_versions"]
        tables += ["critical_worklist", "medication_administrations", "charges"]
        return sum([int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in tables])
    finally:
        await conn.close()


async def _copy_ceiling(dsn: str, rows: int) -> float:
    """Plain COPY of `rows` rows (text key, numbers, text) into a table with a primary key and an index."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TEMP TABLE ceiling (k text PRIMARY KEY, lsn bigint, seq int, a text, b text, n numeric)"
        )
        await conn.execute("CREATE INDEX ON ceiling (lsn)")
        data = [(f"P{i}|K{i}", i, 0, "2823-3", "6.9", i) for i in range(rows)]
        t0 = time.perf_counter()
        await conn.copy_records_to_table("ceiling", records=data)
        return rows / (time.perf_counter() - t0)
    finally:
        await conn.close()


async def _steady(dsn: str, scratch: Path, rate: int, seconds: float) -> dict[str, Any]:
    """Records appended at `rate`/s (each group fsync'd and notified, as the node does), the runner following."""
    envelopes = _envelopes(int(rate * seconds), seed=9)
    async with open_wal(scratch / "steady", WalConfig()) as wal, anyio.create_task_group() as tg:
        runner = _runner(wal, dsn, "steady")
        await tg.start(runner.run)
        per_tick, tick = max(1, rate // 100), 0.01
        started = time.perf_counter()
        lags: list[int] = []
        for n, start in enumerate(range(0, len(envelopes), per_tick)):
            group = envelopes[start : start + per_tick]
            for env, position in zip(group, await wal.append(group), strict=True):
                record = Record(
                    position.lsn, position.recorded_at or "", (env.patient,) if env.patient else (), env.events
                )
                runner.notify(record, env.lane)
            lags.append(runner.status().lag_records)
            delay = started + (n + 1) * tick - time.perf_counter()
            if delay > 0:
                await anyio.sleep(delay)
        achieved = len(envelopes) / (time.perf_counter() - started)
        while runner.status().lag_records > 0:  # noqa: ASYNC110 -- watching the status, as an operator does
            await anyio.sleep(0.01)
        status = runner.status()
        tg.cancel_scope.cancel()
    return {
        "target_per_s": rate,
        "appended_per_s": round(achieved),
        "visible_p50_ms": status.visible_p50_ms,
        "visible_p99_ms": status.visible_p99_ms,
        "lag_records_max": max(lags),
    }


async def _critical(dsn: str, scratch: Path, backlog_records: int, probes: int) -> dict[str, Any]:
    billing = _envelopes(backlog_records, seed=13, mix=FeedMix(0, 0, 0, 0, 0, 0, 1))
    backlog_events = sum(len(e.events) for e in billing)
    async with open_wal(scratch / "critical", WalConfig()) as wal, anyio.create_task_group() as tg:
        await _append(wal, billing)
        runner = _runner(wal, dsn, "critical")
        await tg.start(runner.run)
        reader = await asyncpg.connect(dsn, server_settings={"search_path": "critical"})
        try:
            while runner.status().state != "following" or runner.status().batches < 1:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            seen: list[float] = []
            behind_at_first = runner.status().lag_records
            for i in range(probes):
                key = f"probe-{i}"
                env = _critical_result(key, i)
                t0 = time.perf_counter()
                [position] = await wal.append([env])  # the node ACKs here
                runner.notify(Record(position.lsn, position.recorded_at or "", ("BENCH|1",), env.events), Lane.CRITICAL)
                # A reader polling the worklist, as a clinician's screen would.
                sql = "SELECT 1 FROM critical_worklist WHERE result_key = $1"
                while not await reader.fetchval(sql, key):  # noqa: ASYNC110
                    await anyio.sleep(0.001)
                seen.append((time.perf_counter() - t0) * 1000)
                await anyio.sleep(0.05)
        finally:
            await reader.close()
        tg.cancel_scope.cancel()
    return {
        "backlog_records": backlog_records,
        "backlog_events": backlog_events,
        "backlog_records_behind_at_first_probe": behind_at_first,
        "probes": probes,
        "visible_p50_ms": round(statistics.median(seen), 1),
        "visible_max_ms": round(max(seen), 1),
    }


def _critical_result(key: str, i: int) -> Envelope:
    result = ResultReported(key, Coded("2823-3", "Potassium"), value="6.9", value_type="NM", abnormal_flags=("HH",))
    raw = f"probe {i}".encode()
    return Envelope(
        f"probe-{i}", Kind.HL7V2, "ORU^R01", "BENCH|1", Lane.CRITICAL, "bench", "t", "bench", raw, (result,)
    )


def _node_cost(dsn: str, scratch: Path, count: int) -> dict[str, Any]:
    """`vigil run --stdin` over the same feed without and with the read side (its CPU shares the node's)."""
    feed = b"".join(generate_feed(count, seed=31))
    config = scratch / "with-read-side.toml"
    config.write_text(f'[projections]\ndsn_env = "VIGIL_BENCH_UNSET"\ndsn = "{dsn}"\nschema = "node"\n')
    rates = {}
    for name, extra in (("without", []), ("with", ["--config", str(config)])):
        t0 = time.perf_counter()
        done = subprocess.run(
            [VIGIL, *extra, "run", "--stdin", "--data", str(scratch / f"node-{name}")],
            input=feed,
            capture_output=True,
            check=False,
        )
        fail_if(done.returncode != 0, f"vigil run --stdin ({name} the read side) failed: {done.stderr[-300:]!r}")
        rates[name] = count / (time.perf_counter() - t0)
    return {
        "messages": count,
        "without_per_s": round(rates["without"]),
        "with_per_s": round(rates["with"]),
        "ratio": round(rates["with"] / rates["without"], 3),
    }


async def _migrated(dsn: str, schema: str) -> None:
    """The schema made beforehand, so the node's timed run does not include its creation."""
    conn = await connect(dsn, ProjectionsConfig(schema=schema), Path())
    try:
        await migrate(conn)
    finally:
        await conn.close()


async def _run(dsn: str, scratch: Path, quick: bool) -> dict[str, Any]:
    await _migrated(dsn, "node")
    return {
        "node": await anyio.to_thread.run_sync(_node_cost, dsn, scratch, 2_000 if quick else 20_000),
        "catch_up": await _catch_up(dsn, scratch, 20_000 if quick else 200_000),
        "steady": await _steady(dsn, scratch, 10_000, 1.0 if quick else 10.0),
        "critical": await _critical(dsn, scratch, 30_000 if quick else 1_000_000, 5 if quick else 20),
    }


def _with_database(admin: str, scratch: Path, quick: bool) -> dict[str, Any]:
    name = f"vigil_bench_{secrets.token_hex(4)}"

    async def admin_sql(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin_sql(f'CREATE DATABASE "{name}"'))
    try:
        return anyio.run(_run, admin.rsplit("/", 1)[0] + f"/{name}", scratch, quick)
    finally:
        asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> None:
    args = arguments(__doc__ or "")
    scratch = Path(tempfile.mkdtemp(prefix="vigil-bench-projections-"))
    try:
        with admin_dsn() as admin:
            results = _with_database(admin, scratch, args.quick)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    c, s, k, n = results["catch_up"], results["steady"], results["critical"], results["node"]
    table = Table(title="The read side: the log into PostgreSQL (all projections)")
    table.add_column("measure")
    table.add_column("result", justify="right")
    table.add_column("goal", justify="right")
    table.add_row(
        f"catch-up, {c['records']:,} records / {c['events']:,} events / {c['rows']:,} rows",
        f"{c['events_per_s']:,} events/s",
        ">= 50,000 events/s",
    )
    table.add_row("plain COPY into an indexed table (same run)", f"{c['copy_ceiling_rows_per_s']:,} rows/s", "")
    table.add_row(
        f"steady lag at {s['appended_per_s']:,} records/s (target {s['target_per_s']:,})",
        f"p50 {s['visible_p50_ms']:.0f} ms, p99 {s['visible_p99_ms']:.0f} ms",
        "p99 <= 1,000 ms",
    )
    table.add_row(
        f"critical result in the worklist, {k['backlog_events']:,}-event batch backlog",
        f"p50 {k['visible_p50_ms']} ms, max {k['visible_max_ms']} ms",
        "<= 250 ms",
    )
    table.add_row(
        f"vigil run --stdin, {n['messages']:,} messages, with the read side vs without",
        f"{n['with_per_s']:,}/s vs {n['without_per_s']:,}/s ({n['ratio']}x)",
        "",
    )
    Console(width=130).print(table)
    results["rows_per_s_vs_copy_ceiling"] = round(c["rows_per_s"] / c["copy_ceiling_rows_per_s"], 3)
    Console().print(f"rows/s of the catch-up vs the COPY ceiling: [bold]{results['rows_per_s_vs_copy_ceiling']}[/]")
    Console().print(
        f"backlog records still to apply at the first probe: {k['backlog_records_behind_at_first_probe']:,}"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode({"title": "projections", **results})) + b"\n")
    fail_if(c["events_per_s"] <= 0, "the catch-up applied nothing")
    fail_if(k["backlog_records_behind_at_first_probe"] == 0, "the backlog was gone before the probes: not measured")


if __name__ == "__main__":
    main()
