"""`vigil db migrate|status|rebuild` and `vigil worklist`: the read side, from the command line.

The DSN comes from the environment variable the configuration names
(`projections.dsn_env`, default VIGIL_PG_DSN) or `projections.dsn`.
Acknowledging a critical result is a write: it goes to the running node
(admin socket), which records it in the log; the worklist shows it once the
projection has applied it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click
import msgspec
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from engine.auth import Permission
from engine.cli.console import DataConsole
from engine.cli.context import DATA_OPTION, JSON_OPTION, Context, emit_json
from engine.cli.session import audited, authorized, call
from engine.infra.admin_socket import AdminError, request
from engine.infra.config import DEFAULT_CONFIG_PATH
from engine.projections import (
    CONNECTION_ERRORS,
    PROJECTIONS,
    ProjectionRunner,
    connect,
    critical_worklist,
    dsn_of,
    read_state,
    reset_projection,
)
from engine.projections import migrate as apply_migrations
from engine.wal import WALLockedError, open_wal

__all__ = ["db", "worklist"]

T = TypeVar("T")


def _base(obj: Context) -> Path:
    return (obj.config_path or DEFAULT_CONFIG_PATH).resolve().parent


def _dsn(obj: Context) -> str:
    dsn = dsn_of(obj.config.projections)
    if dsn is None:
        name = obj.config.projections.dsn_env
        raise click.ClickException(f"no read side configured: set ${name} (or projections.dsn) to a PostgreSQL DSN")
    return dsn


def _with_db(obj: Context, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(connection)` on a fresh connection; an unreachable database is one line, not a traceback."""

    async def main() -> T:
        conn = await connect(_dsn(obj), obj.config.projections, _base(obj))
        try:
            return await work(conn)
        finally:
            await conn.close()

    try:
        return anyio.run(main)
    except CONNECTION_ERRORS as exc:
        raise click.ClickException(f"cannot reach the read side's database: {type(exc).__name__}: {exc}") from None


@click.group("db")
def db() -> None:
    """The read side in PostgreSQL: migrate, status, rebuild."""


@db.command("migrate")
@JSON_OPTION
@click.pass_obj
def migrate(obj: Context, *, as_json: bool) -> None:
    """Bring the read side's schema up to date (idempotent; the node does it too when it starts)."""
    applied = _with_db(obj, apply_migrations)
    if as_json:
        emit_json({"applied": applied})
    else:
        click.echo(f"applied migrations {applied}" if applied else "the schema is up to date")


@db.command("status")
@DATA_OPTION
@JSON_OPTION
@click.pass_obj
def status(obj: Context, data: Path | None, *, as_json: bool) -> None:
    """Each projection's position and issues; the node's lag when a node runs."""
    state = _with_db(obj, read_state)
    try:
        node = request(obj.data_dir(data), "health").get("projections")
    except AdminError:
        node = None
    if as_json:
        emit_json({"database": msgspec.to_builtins(state), "node": node})
        return
    table = Table(title=f"Read side (schema version {state.schema_version})")
    for column in ("projection", "position", "issues"):
        table.add_column(column, justify="left" if column == "projection" else "right")
    for name, lsn in sorted(state.positions.items()):
        table.add_row(name, f"{lsn:,}", f"{sum(i.count for i in state.issues if i.projection == name):,}")
    console = DataConsole(soft_wrap=True)
    console.print(table)
    if isinstance(node, dict):
        console.print(
            f"node: {node['state']}; log at LSN {node['last_lsn']:,}, {node['lag_records']:,} records behind "
            f"({node['lag_s']:.1f} s); visible p99 {node['visible_p99_ms']:.0f} ms"
        )
    for issue in state.issues:
        console.print(f"  {issue.projection}.{issue.field}: {issue.count:,} times: {issue.reason}")


@db.command("rebuild")
@click.argument("projection", type=click.Choice(list(PROJECTIONS)))
@DATA_OPTION
@click.pass_obj
def rebuild(obj: Context, projection: str, data: Path | None) -> None:
    """Empty one projection and apply the whole log to it again, with a progress bar.

    With a node running, its runner does the work and this follows it; with
    none, this opens the log and does it itself.
    """
    directory = obj.data_dir(data)

    async def reset(conn: Any) -> None:
        await apply_migrations(conn)
        await reset_projection(conn, projection)

    authorized(obj, directory, Permission.READ_SIDE_MANAGE, action="rebuild")
    _with_db(obj, reset)
    try:
        request(directory, "health")
    except AdminError:
        _rebuild_here(obj, directory, projection)
    else:
        _follow_node(obj, directory, projection)
    click.echo(f"{projection} rebuilt")


def _bar() -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=DataConsole(stderr=True), transient=True)


def _follow_node(obj: Context, directory: Path, projection: str) -> None:
    """The node's runner replays the log into the emptied projection; the database's position is the truth."""
    last = request(directory, "health")["wal"]["last_lsn"]

    with _bar() as bar:
        task = bar.add_task(f"rebuilding {projection}", total=last)

        async def follow(conn: Any) -> None:
            sql = "SELECT lsn FROM projection_positions WHERE name = $1"
            while (done := int(await conn.fetchval(sql, projection))) < last:
                bar.update(task, completed=done)
                await anyio.sleep(0.2)

        _with_db(obj, follow)


def _rebuild_here(obj: Context, directory: Path, projection: str) -> None:
    config = obj.config

    async def main() -> None:
        async with open_wal(directory / "wal", config.wal) as wal:
            rules = config.lanes.rules
            flags = (*rules.critical_abnormal_flags, *rules.local_critical_flags)
            runner = ProjectionRunner(
                wal, config.projections, _dsn(obj), base=_base(obj), critical_flags=flags, only=[projection]
            )
            with _bar() as bar:
                task = bar.add_task(f"rebuilding {projection}", total=wal.last_lsn)
                async with anyio.create_task_group() as tg:

                    async def show() -> None:
                        while True:
                            bar.update(task, completed=runner.status().positions.get(projection, 0))
                            await anyio.sleep(0.2)

                    tg.start_soon(show)
                    await runner.catch_up()
                    tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    except WALLockedError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("worklist", invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True, help="Acknowledged items too.")
@DATA_OPTION
@JSON_OPTION
@click.pass_context
def worklist(ctx: click.Context, data: Path | None, *, show_all: bool, as_json: bool) -> None:
    """Critical results waiting for a clinician's acknowledgement (oldest first; each patient shown is audited)."""
    if ctx.invoked_subcommand is not None:
        return
    obj: Context = ctx.obj
    directory = obj.data_dir(data)
    _dsn(obj)  # a node without a read side says so before asking who you are
    authorized(obj, directory, Permission.WORKLIST_READ, action="worklist", reads_files=False)

    async def fetch(conn: Any) -> list[dict[str, Any]]:
        return await critical_worklist(conn, acknowledged_too=show_all)

    items = _with_db(obj, fetch)
    audited(obj, directory, Permission.WORKLIST_READ, "worklist", [item["patient"] for item in items])
    if as_json:
        emit_json(items)
        return
    table = Table(title="Critical results" + (" (all)" if show_all else ": open"))
    for column in ("opened", "patient", "result", "value", "flags", "status", "acknowledged"):
        table.add_column(column)
    for item in items:
        acknowledged = f"{item['acknowledged_by']} {item['acknowledged_at']}" if item["acknowledged"] else ""
        table.add_row(
            item["opened_at"],
            item["patient"],
            f"{item['result_key']} {item['code_text'] or item['code']}",
            f"{item['value']} {item['units']}".strip(),
            ",".join(item["abnormal_flags"]),
            item["status"],
            acknowledged,
        )
    DataConsole(soft_wrap=True).print(table)


@worklist.command("ack")
@click.argument("patient")
@click.argument("result_key")
@click.option("--note", default="", help="A short note (what was done).")
@DATA_OPTION
@JSON_OPTION
@click.pass_obj
def ack(obj: Context, patient: str, result_key: str, *, note: str, data: Path | None, as_json: bool) -> None:
    """Acknowledge a critical result as the logged-in clinician: recorded in the log by the running node."""
    directory = obj.data_dir(data)
    fields = {"patient": patient, "result_key": result_key, "note": note, "request_id": uuid.uuid4().hex}
    reply = call(obj, directory, "acknowledge", **fields)
    if as_json:
        emit_json(reply)
    else:
        click.echo(f"acknowledged at {reply['acknowledged_at']} (log LSN {reply['lsn']})")
