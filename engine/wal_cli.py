"""`vigil wal verify|dump` and `vigil audit verify`: the log, checked and shown.

All three read the log directly and take no lock, so they run beside a live
node; they never repair anything (the next open does that).
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.table import Table

from engine.cli_context import Context
from engine.errors import ConfigError
from engine.wal.audit import AuditTrail, audit_key_from_env
from engine.wal.checkpoint import CheckpointStore
from engine.wal.errors import WALCorruptError
from engine.wal.files import OSFiles
from engine.wal.reader import iter_records
from engine.wal.record import LogRecord
from engine.wal.scan import ScanResult, scan_log

__all__ = ["audit", "wal"]

_DATA = click.option(
    "--data",
    "data",
    type=click.Path(file_okay=False, path_type=Path),
    help="The node's data directory (default: node.data_dir from the configuration).",
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _wal_dir(obj: Context, data: Path | None) -> Path:
    directory = obj.data_dir(data) / "wal"
    if not directory.is_dir():
        raise click.ClickException(f"no log at {directory}")
    return directory


@click.group()
def wal() -> None:
    """The write-ahead log: verify it, dump it."""


@wal.command("verify")
@_DATA
@_JSON
@click.pass_obj
def wal_verify(obj: Context, data: Path | None, *, as_json: bool) -> None:
    """Check every CRC and the whole hash chain; print what was checked and the first problem.

    Exit 1 on corruption (a bad record before the tail, a broken chain, a
    gap, a checkpoint that does not match). An incomplete tail (a write in
    progress, or torn by a crash) is reported but is not corruption: the
    next open truncates it.
    """
    directory = _wal_dir(obj, data)
    files = OSFiles()
    checkpoint = CheckpointStore(directory, files).load()
    watch = frozenset({checkpoint.lsn}) if checkpoint else frozenset()
    report: dict[str, Any] = {"directory": str(directory), "ok": True, "problem": None}
    try:
        result = scan_log(directory, files, watch=watch)
    except WALCorruptError as exc:
        report.update(ok=False, problem=str(exc), segment=exc.segment, offset=exc.offset)
        _emit(report, as_json)
        sys.exit(1)
    report.update(_summary(result))
    if checkpoint is not None:
        matches = result.hashes.get(checkpoint.lsn) == checkpoint.hash
        report["checkpoint"] = {"lsn": checkpoint.lsn, "at": checkpoint.at, "matches": matches}
        if not matches:
            report.update(ok=False, problem=f"checkpoint at LSN {checkpoint.lsn} does not match the log")
    _emit(report, as_json)
    if not report["ok"]:
        sys.exit(1)


def _summary(result: ScanResult) -> dict[str, Any]:
    tail = result.tail
    return {
        "segments": len(result.segments),
        "records": result.records,
        "bytes": sum(s.size for s in result.segments),
        "last_lsn": result.last_lsn,
        "crc_checked": result.records,
        "chain_checked": result.hashed_records,
        "tail": None if tail is None else msgspec.to_builtins(tail),
    }


def _emit(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
        return
    console = Console(soft_wrap=True)
    if report.get("problem"):
        console.print(f"[bold red]problem[/]: {report['problem']}")
    if "records" in report:
        console.print(
            f"checked {report['records']:,} records in {report['segments']} segment(s), "
            f"{report['bytes']:,} bytes: every CRC, and the hash chain from genesis to LSN {report['last_lsn']:,}"
        )
    checkpoint = report.get("checkpoint")
    if checkpoint:
        state = "matches" if checkpoint["matches"] else "[red]does NOT match[/]"
        console.print(f"checkpoint at LSN {checkpoint['lsn']:,} ({checkpoint['at']}) {state}")
    tail = report.get("tail")
    if tail:
        console.print(
            f"[yellow]incomplete tail[/]: {tail['size']} bytes at byte {tail['offset']} of {tail['segment']} "
            f"({tail['reason']}): a write in progress or torn by a crash; the next open truncates it"
        )
    if report["ok"]:
        console.print("[green]ok[/]")


@wal.command("dump")
@_DATA
@click.option("--from", "from_lsn", type=click.IntRange(min=1), default=1, help="First LSN.")
@click.option("--patient", help="Only records touching this patient key (authority|identifier).")
@_JSON
@click.pass_obj
def wal_dump(obj: Context, data: Path | None, from_lsn: int, patient: str | None, *, as_json: bool) -> None:
    """Show records: a table, or NDJSON with the original bytes in base64."""
    directory = _wal_dir(obj, data)
    records = iter_records(directory, OSFiles(), from_lsn=from_lsn, patient=patient)
    if as_json:
        out = sys.stdout.buffer
        for record in records:
            out.write(msgspec.json.encode(_record_json(record)) + b"\n")
        out.flush()
        return
    table = Table()
    for name in ("lsn", "recorded at", "lane", "type", "message id", "events"):
        table.add_column(name)
    for record in records:
        env = record.envelope
        table.add_row(
            str(record.lsn),
            record.recorded_at,
            env.lane.value,
            env.message_type,
            record.message_id,
            str(len(env.events)),
        )
    Console().print(table)


def _record_json(record: LogRecord) -> dict[str, Any]:
    env = record.envelope
    return {
        "lsn": record.lsn,
        "recorded_at": record.recorded_at,
        "partition": record.partition,
        "epoch": record.epoch,
        "message_id": record.message_id,
        "patients": list(record.patients),
        "kind": env.kind.value,
        "type": env.message_type,
        "lane": env.lane.value,
        "reason": env.lane_reason,
        "received_at": env.received_at,
        "source": env.source,
        "events": msgspec.to_builtins(env.events),
        "raw_base64": base64.b64encode(env.raw).decode(),
    }


@click.group()
def audit() -> None:
    """The audit trail of the log."""


@audit.command("verify")
@_DATA
@_JSON
@click.pass_obj
def audit_verify(obj: Context, data: Path | None, *, as_json: bool) -> None:
    """Verify the hash chain and every keyed checkpoint (key from the environment).

    Catches records edited or removed, and a chain rewritten end to end
    (its hashes no longer match the keyed checkpoints). Exit 1 on any problem.
    """
    directory = _wal_dir(obj, data)
    variable = obj.config.audit.key_env
    try:
        key = audit_key_from_env(variable)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if key is None:
        raise click.ClickException(f"no audit key: set {variable} to the key the node was given")
    files = OSFiles()
    trail = AuditTrail(directory, files, key)
    watch = frozenset(e.lsn for e in trail.entries())
    report: dict[str, Any] = {"directory": str(directory), "ok": True, "problem": None}
    try:
        result = scan_log(directory, files, watch=watch)
    except WALCorruptError as exc:
        report.update(ok=False, problem=str(exc))
        _emit(report, as_json)
        sys.exit(1)
    report.update(_summary(result))
    count, problem = trail.verify(result.hashes, result.last_lsn)
    report["keyed_checkpoints"] = count
    if problem is not None:
        report.update(ok=False, problem=f"keyed checkpoint {problem.entry} (LSN {problem.lsn}): {problem.reason}")
    elif count == 0:
        report.update(ok=False, problem="no keyed checkpoint yet: nothing vouches for the chain")
    _emit(report, as_json)
    if not as_json:
        Console(soft_wrap=True).print(f"{count} keyed checkpoint(s) checked")
    if not report["ok"]:
        sys.exit(1)
