"""`vigil routes`: deliveries to downstream systems, per route and lane; refusals, and what to do with them.

Asks the running node (a route's state lives in it). Listing needs
status.read; a refusal's metadata log.metadata; its answer text log.content
(it may quote the message); retry, skip, pause and resume routes.manage.
Every request is audited by the node.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from engine.cli.console import DataConsole
from engine.cli.context import DATA_OPTION, JSON_OPTION, Context, emit_json
from engine.cli.session import call

__all__ = ["routes"]


@click.group(invoke_without_command=True)
@DATA_OPTION
@JSON_OPTION
@click.pass_context
def routes(ctx: click.Context, data: Path | None, *, as_json: bool) -> None:
    """Each route: state, backlog and oldest undelivered age by lane, in flight, rate, retries, refusals, p50/p99."""
    if ctx.invoked_subcommand is not None:
        return
    obj: Context = ctx.obj
    listing = call(obj, obj.data_dir(data), "routes")
    if as_json:
        emit_json(listing)
        return
    console = DataConsole(soft_wrap=True)
    if not listing:
        console.print("no routes configured ([[routes]] in the configuration file)")
        return
    for route in listing:
        console.print(_route_table(route))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _route_table(route: dict[str, Any]) -> Table | str:
    if "lanes" not in route:
        return f"{route['name']}: {route['state']}"
    title = (
        f"{route['name']} -> {route['destination']}: {route['state']}; {route['in_flight']} in flight, "
        f"{route['delivered']:,} delivered ({route['delivered_per_s']}/s), {route['retries']:,} retries, "
        f"{route['resent']:,} possibly duplicated, {route['refused_open']} refused, "
        f"{route['held_patients']} patient(s) held"
    )
    table = Table(title=title, title_justify="left")
    for name in ("lane", "backlog", "oldest s", "delivered", "p50 ms", "p99 ms"):
        table.add_column(name, justify="left" if name == "lane" else "right")
    for lane in route["lanes"]:
        age = lane["oldest_age_s"]
        table.add_row(
            lane["lane"],
            f"{lane['backlog']:,}",
            "-" if age is None else f"{age:.1f}",
            f"{lane['delivered']:,}",
            _ms(lane["p50_ms"]),
            _ms(lane["p99_ms"]),
        )
    return table


@routes.command("errors")
@click.argument("route")
@DATA_OPTION
@JSON_OPTION
@click.pass_obj
def errors(obj: Context, route: str, data: Path | None, *, as_json: bool) -> None:
    """The messages ROUTE's destination refused (AR): metadata only; `show` gives the answer."""
    refused = call(obj, obj.data_dir(data), "route_errors", route=route)
    if as_json:
        for item in refused:
            emit_json(item)
        return
    table = Table(title=f"{len(refused)} refused on {route}")
    for name in ("lsn", "lane", "type", "message id", "code", "attempts", "at"):
        table.add_column(name)
    for item in refused:
        table.add_row(
            str(item["lsn"]),
            item["lane"],
            item["message_type"],
            item["message_id"],
            item["code"],
            str(item["attempts"]),
            item["at"],
        )
    DataConsole(soft_wrap=True).print(table)


@routes.command("show")
@click.argument("route")
@click.argument("lsn", type=click.IntRange(min=1))
@DATA_OPTION
@JSON_OPTION
@click.pass_obj
def show(obj: Context, route: str, lsn: int, data: Path | None, *, as_json: bool) -> None:
    """One refusal with the destination's answer (log content: it may quote the message)."""
    item = call(obj, obj.data_dir(data), "route_error", route=route, lsn=lsn)
    if as_json:
        emit_json(item)
        return
    console = DataConsole(soft_wrap=True)
    console.print(f"LSN {item['lsn']} ({item['message_type']}, {item['lane']}) refused {item['at']}: {item['code']}")
    console.print(item["answer"] or "(no text in the answer)", markup=False, highlight=False)


def _action(operation: str, done: str) -> Callable[..., None]:
    @click.argument("route")
    @click.argument("lsn", type=click.IntRange(min=1))
    @DATA_OPTION
    @click.pass_obj
    def command(obj: Context, route: str, lsn: int, data: Path | None) -> None:
        call(obj, obj.data_dir(data), operation, route=route, lsn=lsn)
        DataConsole(soft_wrap=True).print(f"LSN {lsn} on {route}: {done}")

    return command


routes.command("retry", help="Send a refused message again, first for its patient (whose hold ends).")(
    _action("route_retry", "sent again, first for its patient")
)
routes.command("skip", help="Give up a refused message (it stays in the log); its patient's hold ends.")(
    _action("route_skip", "skipped; the patient's later messages go on")
)


def _switch(operation: str, done: str) -> Callable[..., None]:
    @click.argument("route")
    @DATA_OPTION
    @click.pass_obj
    def command(obj: Context, route: str, data: Path | None) -> None:
        call(obj, obj.data_dir(data), operation, route=route)
        DataConsole(soft_wrap=True).print(f"{route}: {done}")

    return command


routes.command("pause", help="Stop delivering on ROUTE (the backlog grows; nothing is lost).")(
    _switch("route_pause", "paused")
)
routes.command("resume", help="Deliver on ROUTE again, from where it stopped.")(_switch("route_resume", "delivering"))


@routes.command("replay")
@click.argument("route")
@click.option("--from", "from_lsn", type=click.IntRange(min=1), default=1, show_default=True, help="First LSN.")
@click.option("--since", help="Only records the log recorded at or after this time (ISO 8601; UTC if no offset).")
@click.option("--patient", default="", help="Only this patient's messages (authority|identifier).")
@click.option("--type", "message_type", default="", help="Only this message type (ORU^R01).")
@DATA_OPTION
@click.pass_obj
def replay(
    obj: Context, route: str, data: Path | None, *, from_lsn: int, since: str | None, patient: str, message_type: str
) -> None:
    """Deliver history again on ROUTE (a new downstream system loaded from the log), beside new traffic.

    Up to the log's end when asked, only what the route's filter takes; it
    survives a restart (at least once). `vigil routes` shows how far it is.
    """
    answer = call(
        obj,
        obj.data_dir(data),
        "route_replay",
        route=route,
        from_lsn=from_lsn,
        since=since or "",
        patient=patient,
        type=message_type,
    )
    DataConsole(soft_wrap=True).print(
        f"{route}: replaying LSN {answer['first_lsn']:,} to {answer['last_lsn']:,}"
        + (f" recorded since {answer['since']}" if answer["since"] else "")
    )
