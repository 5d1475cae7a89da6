"""The `vigil` operator CLI.

Every command that prints data takes `--json`; every failure exits non-zero
with one line on stderr (no traceback). Parsing is click's, tables and colour
are rich's.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.table import Table

from engine.cli_context import Context
from engine.decode import Decoded, decode_input
from engine.demo import DemoReport, run_demo
from engine.logs import configure_logging
from engine.model import Envelope, Event, Lane, ResultReported
from engine.node_cli import run, send
from engine.wal_cli import audit, quarantine, wal

__all__ = ["main"]

_LANE_STYLE = {Lane.CRITICAL: "bold red", Lane.STANDARD: "cyan", Lane.BATCH: "dim"}
_INPUT_BYTES_MAX = 1024 * 1024 * 1024  # inspect reads whole inputs: refuse beyond 1 GiB


@click.group()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Configuration file (default: the embedded default, config.toml).",
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Vigil: a clinical-priority message engine for HL7 v2 and FHIR R4."""
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
    console = Console()
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
                f"[{_LANE_STYLE[env.lane]}]{env.lane.value}[/]",
                env.lane_reason,
                f"{len(env.events)} ({', '.join(map(str, kinds))})",
                "",
            )
        elif d.error is not None:
            table.add_row(str(d.index), d.kind.value, "", "", "", "", f"[red]{d.error.reason}[/] ({d.error.where()})")
    console.print(table)


@cli.command()
@click.option(
    "--messages",
    default=5000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="How many messages to generate.",
)
@click.option("--seed", default=7, show_default=True, help="Seed of the generated feed.")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON document.")
@click.pass_obj
def demo(obj: Context, messages: int, seed: int, *, as_json: bool) -> None:
    """Run a generated hospital feed (admissions, STAT results, a billing flood) through Vigil."""
    report = run_demo(messages, seed, obj.decoder())
    if as_json:
        doc = msgspec.to_builtins(report)
        doc["messages_per_s"] = round(report.messages_per_s)
        doc["timeline"] = [_timeline_row(e) for e in report.timeline]
        sys.stdout.write(msgspec.json.encode(doc).decode() + "\n")
        return
    _print_demo(report)


def _timeline_row(env: Envelope) -> dict[str, Any]:
    return {
        "message_id": env.message_id,
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
    if tag == "result":
        assert isinstance(event, ResultReported)
        flags = ",".join(event.abnormal_flags)
        return f"result {event.code.text or event.code.code} = {event.value} {event.units} {flags}".rstrip()
    fields = msgspec.to_builtins(event)
    detail = " ".join(str(fields[k]) for k in _SUMMARY_FIELDS.get(tag, ()) if fields.get(k))
    return f"{tag} {detail}".rstrip()


def _print_demo(report: DemoReport) -> None:
    console = Console()
    console.print(
        f"[bold]Vigil demo[/]: {report.messages} generated messages through the pure pipeline "
        f"(classify, parse, map to events) in {report.elapsed_s:.2f} s "
        f"= [bold]{report.messages_per_s:,.0f}[/] messages/s; {report.rejected} rejected."
    )
    lanes = Table(title="Lanes")
    for name in ("lane", "messages", "share", "decode p50 (µs)", "decode p99 (µs)"):
        lanes.add_column(name, justify="right" if name != "lane" else "left")
    for lane in report.lanes:
        style = _LANE_STYLE[Lane(lane.lane)]
        share = lane.messages / report.messages if report.messages else 0.0
        lanes.add_row(
            f"[{style}]{lane.lane}[/]",
            str(lane.messages),
            f"{share:.1%}",
            f"{lane.decode_p50_us:.1f}",
            f"{lane.decode_p99_us:.1f}",
        )
    console.print(lanes)
    if report.patient is None:
        return
    timeline = Table(title=f"Timeline of patient {report.patient} (a critical result among them)")
    for name in ("#", "type", "lane", "why", "events"):
        timeline.add_column(name, overflow="fold")
    for n, env in enumerate(report.timeline, start=1):
        timeline.add_row(
            str(n),
            env.message_type,
            f"[{_LANE_STYLE[env.lane]}]{env.lane.value}[/]",
            env.lane_reason,
            "\n".join(_describe(e) for e in env.events),
        )
    console.print(timeline)


cli.add_command(wal)
cli.add_command(audit)
cli.add_command(quarantine)
cli.add_command(run)
cli.add_command(send)


def main() -> None:
    """Entry point of `bin/vigil` and the `vigil` console script."""
    configure_logging("warning")
    cli(prog_name="vigil")


if __name__ == "__main__":
    main()
