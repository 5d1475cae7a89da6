"""What does authentication and the PHI access audit cost a patient query?

One node, in this process, over a log of generated traffic. Two ways to ask
for a patient's record, interleaved query by query so both see the same
machine:

- internal: `node.patient(key)` turned into the same plain data the admin
  request returns, with no session, no decision and no audit;
- authorised: the admin request a clinician's CLI sends, answered in-process
  (`node.handle("patient", ...)`): the token checked against the session
  (setting, device, idle and absolute limits, the user still enabled), the
  permission decided, the access appended to the log as an audit event and
  fsync'd before the record is returned, then the same actor query.

Goal (issue 8): authentication and audit add at most 1 ms at p99. Also shown:
the two parts of that cost on their own (the decision; the audit append),
and the log's own fsync p99 on this disk, since the audit append waits for one.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
from _harness import arguments, fail_if
from rich.console import Console
from rich.table import Table

from engine.auth import Credentials, Permission, Role, Setting, audit_envelope
from engine.core.feedgen import generate_feed
from engine.infra.config import Config
from engine.node import Node

PASSWORD = "bench password 1"
PIN = "2468"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _fsyncs(path: Path, count: int) -> list[float]:
    """This disk's fsync times (ms): a 4 KiB append and its fsync, `count` times."""
    samples = []
    with path.open("ab") as f:
        for _ in range(count):
            f.write(b"x" * 4096)
            f.flush()
            started = time.perf_counter()
            os.fsync(f.fileno())
            samples.append((time.perf_counter() - started) * 1000)
    path.unlink()
    return samples


def _row(name: str, samples: list[float]) -> dict[str, Any]:
    return {
        "name": name,
        "queries": len(samples),
        "p50_ms": round(_percentile(samples, 50), 3),
        "p99_ms": round(_percentile(samples, 99), 3),
        "mean_ms": round(statistics.fmean(samples), 3),
    }


async def _timed(samples: list[float], call: Any) -> None:
    started = time.perf_counter()
    await call()
    samples.append((time.perf_counter() - started) * 1000)


async def _unauthenticated(node: Node, key: str) -> object:
    """The same answer as the admin request, without a session or an audit: the query and its conversion."""
    return msgspec.to_builtins(await node.patient(key))


async def _measure(data: Path, queries: int, messages: int) -> dict[str, Any]:
    config = Config()
    feed = b"".join(generate_feed(messages, seed=3, patients=50))
    await Node(config, data).run(stdin=feed)  # the log to query, then a serving node over it
    node = Node(config, data)
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        service = node.auth.service
        await anyio.to_thread.run_sync(
            lambda: service.add_user(None, "admin", name="", roles=(Role.ADMINISTRATOR,), password=PASSWORD, pin=PIN)
        )
        admin_login = service.login("admin", PASSWORD, Setting.OFFICE, "bench")
        admin = service.authorize(Credentials(admin_login.token, "bench"), Permission.USER_MANAGE)
        service.add_user(admin, "dr.bench", name="", roles=(Role.CLINICIAN,), password=PASSWORD, pin=PIN)
        login = await node.handle(
            "login", {"user": "dr.bench", "password": PASSWORD, "setting": "ward", "device": "bench"}
        )
        assert isinstance(login, dict)
        creds = Credentials(login["token"], "bench")
        request = {"auth": {"token": creds.token, "device": "bench"}}
        keys = sorted({r.envelope.patient for r in node.wal.read_from(1) if r.envelope.patient})
        fail_if(not keys, "no patients in the generated log")
        for key in keys:  # every actor active before timing: both ways then query a warm actor
            await node.patient(key)
        internal: list[float] = []
        authorised: list[float] = []
        decide: list[float] = []
        audit: list[float] = []
        for i in range(queries):
            key = keys[i % len(keys)]
            await _timed(internal, lambda key=key: _unauthenticated(node, key))
            await _timed(authorised, lambda key=key: node.handle("patient", {**request, "key": key}))
            started = time.perf_counter()  # the decision runs on the event loop, as the node runs it
            service.authorize(creds, Permission.RECORD_READ, patient=key, action="bench")
            decide.append((time.perf_counter() - started) * 1000)
            event = service.authorize(creds, Permission.RECORD_READ, patient=key, action="bench").audit
            envelope = audit_envelope(event[0][1], key, node="bench")
            await _timed(audit, lambda envelope=envelope: node.wal.append([envelope]))
        node.stop()
    fsync_p99_ms = _percentile(await anyio.to_thread.run_sync(_fsyncs, data / "fsync.probe", 500), 99)
    rows = [
        _row("internal (no session, no audit)", internal),
        _row("authorised (session, decision, audit, query)", authorised),
        _row("  of which: the decision (session, user, permission)", decide),
        _row("  of which: the audit event, appended and fsync'd", audit),
    ]
    added_p99 = rows[1]["p99_ms"] - rows[0]["p99_ms"]
    return {
        "rows": rows,
        "added_p99_ms": round(added_p99, 3),
        "added_p50_ms": round(rows[1]["p50_ms"] - rows[0]["p50_ms"], 3),
        "goal_added_p99_ms": 1.0,
        "log_fsync_p99_ms": round(fsync_p99_ms, 3),
        "patients": len(keys),
    }


def main() -> None:
    args = arguments(__doc__ or "")
    queries = 300 if args.quick else 5000
    with tempfile.TemporaryDirectory(prefix="vigil-bench-auth-") as tmp:
        result = anyio.run(_measure, Path(tmp) / "data", queries, 400 if args.quick else 4000)
    table = Table(title=f"A patient query, internal vs authorised and audited ({queries:,} of each, interleaved)")
    for name in ("way", "queries", "p50 ms", "p99 ms", "mean ms"):
        table.add_column(name, justify="left" if name == "way" else "right")
    for row in result["rows"]:
        table.add_row(
            row["name"], f"{row['queries']:,}", f"{row['p50_ms']:.3f}", f"{row['p99_ms']:.3f}", f"{row['mean_ms']:.3f}"
        )
    console = Console(width=120)
    console.print(table)
    console.print(
        f"authentication and audit add [bold]{result['added_p99_ms']:.3f} ms[/] at p99 "
        f"({result['added_p50_ms']:.3f} ms at p50); goal ≤ 1 ms; the log's fsync p99 here: "
        f"{result['log_fsync_p99_ms']:.3f} ms"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode({"title": "bench_auth", **result})) + b"\n")


if __name__ == "__main__":
    main()
