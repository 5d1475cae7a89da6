"""The `vigil` operator CLI.

Every command that prints data takes `--json`; every failure exits non-zero
with one line on stderr (no traceback). Parsing is click's, tables and colour
are rich's.
"""

from __future__ import annotations

import functools
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import click
import msgspec
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from engine.cli.archive import archive
from engine.cli.auth import AUDIT_COMMANDS, break_glass, lock, login, logout, passwd, unlock, user, whoami
from engine.cli.backup import backup, restore
from engine.cli.clients import client
from engine.cli.cluster import cluster
from engine.cli.console import DataConsole, InertGroup, styled
from engine.cli.context import Context
from engine.cli.db import db, worklist
from engine.cli.demo import STORY_MESSAGES, DemoReport, run_demo
from engine.cli.deploy import deploy
from engine.cli.message_log import log
from engine.cli.node import run, send
from engine.cli.ops import patient, status, top
from engine.cli.quarantine import quarantine
from engine.cli.routes import routes
from engine.cli.wal import audit, wal
from engine.cli.workstations import workstation
from engine.core.decode import Decoded, decode_input
from engine.core.model import Event, Lane, ResultReported
from engine.infra.logging_setup import configure_logging
from engine.wal import LogRecord

__all__ = ["global_options_first", "main"]

_LANE_STYLE = {Lane.CRITICAL: "bold red", Lane.STANDARD: "cyan", Lane.BATCH: "dim"}
_INPUT_BYTES_MAX = 1024 * 1024 * 1024  # inspect reads whole inputs: refuse beyond 1 GiB


@click.group(cls=InertGroup)
@click.version_option(package_name="vigil", message="vigil %(version)s")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="VIGIL_CONFIG",
    help="Configuration file (default: $VIGIL_CONFIG, else the embedded default, config.toml).",
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Vigil: a clinical-priority message engine for HL7 v2 and FHIR R4."""
    # Warnings and errors only, to stderr: stdout is for the command's data (JSON).
    configure_logging("warning")
    ctx.obj = Context(config_path)


def _read_input(source: str) -> bytes:
    if source == "-":
        data = sys.stdin.buffer.read(_INPUT_BYTES_MAX + 1)
    else:
        try:
            with Path(source).open("rb") as f:
                data = f.read(_INPUT_BYTES_MAX + 1)
        except OSError as exc:
            raise click.ClickException(f"{source}: cannot read: {exc.strerror}") from None
    if len(data) > _INPUT_BYTES_MAX:
        raise click.ClickException(f"{source}: larger than {_INPUT_BYTES_MAX} bytes; split it first")
    return data


def _event_summary(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(event)
    return out


def _decoded_json(d: Decoded) -> dict[str, Any]:
    env = d.envelope
    return {
        "index": d.index,
        "ok": env is not None,
        "kind": d.kind.value,
        "type": env.message_type if env else None,
        "message_id": env.message_id if env else None,
        "patient": env.patient if env else None,
        "lane": env.lane.value if env else None,
        "reason": env.lane_reason if env else None,
        "events": [_event_summary(e) for e in env.events] if env else [],
        "error": d.error.to_dict() if d.error is not None else None,
    }


@cli.command()
@click.argument("source", metavar="FILE|-")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message (NDJSON).")
@click.pass_obj
def inspect(obj: Context, source: str, *, as_json: bool) -> None:
    """Parse and classify messages without side effects.

    Reads HL7 v2 (any segment terminators, batch files), MLLP-framed HL7 v2,
    FHIR JSON or NDJSON; the format is detected. Exits 1 when any message was
    rejected (the others are still shown).
    """
    raw = _read_input(source)
    decoded = decode_input(
        raw,
        obj.decoder(),
        received_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        source="stdin" if source == "-" else source,
        max_message_bytes=obj.config.ingest.message_bytes_max,
    )
    if as_json:
        out = sys.stdout.buffer
        for d in decoded:
            out.write(msgspec.json.encode(_decoded_json(d)) + b"\n")
        out.flush()
    else:
        _print_inspect(decoded, source)
    if not decoded:
        raise click.ClickException(f"{source}: no message found")
    if any(d.error is not None for d in decoded):
        sys.exit(1)


def _print_inspect(decoded: list[Decoded], source: str) -> None:
    console = DataConsole()
    table = Table(title=f"{source}: {len(decoded)} message(s)", show_lines=False)
    for name in ("#", "kind", "type", "lane", "why", "events", "error"):
        table.add_column(name, overflow="fold")
    for d in decoded:
        env = d.envelope
        if env is not None:
            kinds = sorted({e.__struct_config__.tag for e in env.events}, key=str)
            table.add_row(
                str(d.index),
                d.kind.value,
                env.message_type,
                styled(env.lane.value, _LANE_STYLE[env.lane]),
                env.lane_reason,
                f"{len(env.events)} ({', '.join(map(str, kinds))})",
                "",
            )
        elif d.error is not None:
            error = Text.assemble(styled(d.error.reason, "red"), styled(f" ({d.error.where()})"))
            table.add_row(str(d.index), d.kind.value, "", "", "", "", error)
    console.print(table)


@cli.command()
@click.option(
    "--messages", default=20_000, show_default=True, type=click.IntRange(1, 10_000_000), help="Generated messages."
)
@click.option("--seed", default=7, show_default=True, help="Seed of the generated feed.")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), help="Keep the node's data here.")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON document.")
@click.option("--stay", is_flag=True, help="After the report, keep the node and its web console up until Ctrl-C.")
@click.pass_obj
def demo(obj: Context, messages: int, seed: int, keep: Path | None, *, as_json: bool, stay: bool) -> None:
    """Run an embedded node and feed it a hospital's traffic over MLLP (a billing flood and STAT results).

    The node's web console is up while the demo runs (its address and a demo
    account are printed first); --stay keeps it up after the report.
    """
    configure_logging("warning")
    console = DataConsole(stderr=True)
    columns = (TextColumn("[bold]feeding the node over MLLP"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=as_json) as bar:
        task = bar.add_task("feed", total=messages + STORY_MESSAGES)

        async def hold(report: DemoReport) -> None:
            bar.stop()
            _print_demo(report)
            console.print(
                f"the node and its web console stay up (data in {report.data_dir or 'a temporary folder'}): "
                "Ctrl-C to stop"
            )
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    return

        run = functools.partial(
            run_demo,
            obj.config,
            messages,
            seed,
            keep=keep,
            progress=lambda n: bar.advance(task, n),
            console=lambda where: console.print(f"web console: {where}"),
            hold=hold if stay else None,
        )
        report = anyio.run(run)
    if stay:
        return
    if as_json:
        doc = msgspec.to_builtins(report)
        doc["messages_per_s"] = round(report.messages_per_s)
        doc["timeline"] = [_timeline_row(r) for r in report.timeline]
        sys.stdout.write(msgspec.json.encode(doc).decode() + "\n")
        return
    _print_demo(report)


def _timeline_row(record: LogRecord) -> dict[str, Any]:
    env = record.envelope
    return {
        "lsn": record.lsn,
        "recorded_at": record.recorded_at,
        "type": env.message_type,
        "lane": env.lane.value,
        "reason": env.lane_reason,
        "events": [_describe(e) for e in env.events],
    }


_SUMMARY_FIELDS = {
    "demographics": ("family", "sex"),
    "admitted": ("patient_class", "location", "admission_type"),
    "transferred": ("from_location", "to_location"),
    "discharged": ("disposition",),
    "order_placed": ("order_id", "priority"),
    "order_changed": ("order_id", "status"),
    "order_cancelled": ("order_id", "reason"),
    "medication_ordered": ("order_id", "dose", "units"),
    "charge": ("transaction_id", "amount"),
    "document": ("document_type", "status"),
}


def _describe(event: Event) -> str:
    """One short line for a person: the event kind and its telling fields."""
    tag = str(event.__struct_config__.tag)
    if isinstance(event, ResultReported):
        flags = ",".join(event.abnormal_flags)
        status = " (correction)" if event.corrects else ""
        return f"result {event.code.text or event.code.code} = {event.value} {event.units} {flags}{status}".rstrip()
    fields = msgspec.to_builtins(event)
    detail = " ".join(str(fields[k]) for k in _SUMMARY_FIELDS.get(tag, ()) if fields.get(k))
    return f"{tag} {detail}".rstrip()


def _print_delivery(console: DataConsole, report: DemoReport) -> None:
    """The route to the stand-in EHR: each lane's wait after its ACK, and what the critical potassium overtook."""
    table = Table(title="Delivered onward to the EHR (four MLLP connections, 0.5 ms per message): ACK to arrival")
    for name in ("lane", "delivered", "p50 (ms)", "p99 (ms)"):
        table.add_column(name, justify="left" if name == "lane" else "right")
    for lane in report.delivery:
        cells = (f"{lane.delivered:,}", f"{lane.p50_ms:.1f}", f"{lane.p99_ms:.1f}")
        table.add_row(styled(lane.lane, _LANE_STYLE[Lane(lane.lane)]), *cells)
    console.print(table)
    potassium = next((s for s in report.story_delivery if s.lane == "critical" and s.message_type == "ORU^R01"), None)
    if potassium is not None and potassium.delivered_after_ms is not None:
        console.print(
            f"Her critical potassium reached the EHR {potassium.delivered_after_ms:.1f} ms after its ACK, ahead of "
            f"{potassium.billing_overtaken:,} billing messages accepted before it (a first-in first-out route "
            "would have sent those first)."
        )
    if report.still_to_deliver:
        console.print(f"{report.still_to_deliver:,} messages were still on their way when the demo stopped.")


def _print_demo(report: DemoReport) -> None:
    console = DataConsole()
    console.print(
        Text.assemble(
            styled("Vigil demo", "bold"),
            f": {report.messages:,} messages over MLLP to an embedded node in {report.elapsed_s:.1f} s = ",
            styled(f"{report.messages_per_s:,.0f}", "bold"),
            " messages/s, each ACK'd only once durable.",
        )
    )
    lanes = Table(title="Per lane: send to ACK (durable)")
    for name in ("lane", "messages", "accepted", "ACK p50 (ms)", "ACK p99 (ms)", "queue wait p99 (ms)"):
        lanes.add_column(name, justify="left" if name == "lane" else "right")
    waits = {s.lane: s.wait_p99_us / 1000 for s in report.node_lanes}
    for lane in report.lanes:
        cells = (
            f"{lane.messages:,}",
            f"{lane.accepted:,}",
            f"{lane.ack_p50_ms:.2f}",
            f"{lane.ack_p99_ms:.2f}",
            f"{waits.get(lane.lane, 0):.2f}",
        )
        lanes.add_row(styled(lane.lane, _LANE_STYLE[Lane(lane.lane)]), *cells)
    console.print(lanes)
    by_lane = {lane.lane: lane for lane in report.lanes}
    batch, critical = by_lane["batch"], by_lane["critical"]
    share = batch.messages / max(1, report.messages)
    console.print(
        f"The billing flood ({batch.messages:,} messages, {share:.0%} of the feed) queued in its own lane "
        f"(wait p99 {waits.get('batch', 0):.2f} ms); the {critical.messages:,} critical messages did not queue behind "
        f"it (wait p99 {waits.get('critical', 0):.2f} ms). Send-to-ACK times include the senders, which share this "
        "one process and its CPU with the node."
    )
    _print_delivery(console, report)
    timeline = Table(title=f"Patient {report.patient}: the log's record of her stay")
    for name in ("LSN", "type", "lane", "why", "events"):
        timeline.add_column(name, overflow="fold")
    for record in report.timeline:
        env = record.envelope
        events = "\n".join(_describe(e) for e in env.events)
        timeline.add_row(
            str(record.lsn), env.message_type, styled(env.lane.value, _LANE_STYLE[env.lane]), env.lane_reason, events
        )
    console.print(timeline)
    for result in report.record.results:
        steps = []
        for version in result.versions:
            assert isinstance(version.event, ResultReported)
            steps.append(f"{version.event.value} {' '.join(version.event.abnormal_flags)} (LSN {version.lsn})")
        current = result.current
        now = f"{current.value} {current.units}"
        versions = f"; versions: {' -> '.join(steps)}"
        console.print(Text.assemble(styled(f"{current.code.text}: now "), styled(now, "bold"), styled(versions)))
    if report.data_dir:
        console.print(f"data kept in {report.data_dir}")


cli.add_command(wal)
cli.add_command(audit)
cli.add_command(archive)
cli.add_command(quarantine)
cli.add_command(run)
cli.add_command(send)
cli.add_command(status)
cli.add_command(top)
cli.add_command(patient)
cli.add_command(log)
cli.add_command(db)
cli.add_command(worklist)
cli.add_command(cluster)
cli.add_command(routes)
cli.add_command(client)
cli.add_command(backup)
cli.add_command(restore)
cli.add_command(deploy)
cli.add_command(workstation)
for command in (login, unlock, lock, logout, whoami, passwd, break_glass, user):
    cli.add_command(command)
for command in AUDIT_COMMANDS:
    audit.add_command(command)


def global_options_first(args: list[str]) -> list[str]:
    """`--config FILE` given after the subcommand (`vigil status --config F`) moved before it, where click reads it.

    Only up to a `--` (after it every word is an argument); the first
    `--config` wins, as it would before the subcommand.
    """
    end = args.index("--") if "--" in args else len(args)
    for i, word in enumerate(args[:end]):
        if i and word == "--config" and i + 1 < end:
            return [*args[i : i + 2], *args[:i], *args[i + 2 :]]
        if i and word.startswith("--config="):
            return [word, *args[:i], *args[i + 1 :]]
    return args


def main() -> None:
    """Entry point of `bin/vigil` and the `vigil` console script."""
    configure_logging("warning")
    cli(args=global_options_first(sys.argv[1:]), prog_name="vigil")


if __name__ == "__main__":
    main()
