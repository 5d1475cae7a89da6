"""`vigil wal verify|dump`, `vigil audit verify`.

They read the files directly and take no lock, so they run beside a live
node; they never repair anything (the next open does that).
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.table import Table
from rich.text import Text

from engine.auth import Permission
from engine.cli.archive import configured_archive
from engine.cli.console import DataConsole, styled
from engine.cli.context import DATA_OPTION, JSON_OPTION, Context, emit_json
from engine.cli.progress import scan_progress
from engine.cli.session import audited, authorized
from engine.core.errors import ConfigError
from engine.retention import ArchiveError
from engine.search import control_id_of, sender_of
from engine.wal import (
    BaseStore,
    CheckpointStore,
    KeyedCheckpoints,
    LogRecord,
    OSFiles,
    ScanResult,
    WALCorruptError,
    audit_key_from_env,
    iter_records,
    scan_log,
)

__all__ = ["audit", "wal"]


def _wal_dir(obj: Context, data: Path | None) -> Path:
    directory = obj.data_dir(data) / "wal"
    if not directory.is_dir():
        raise click.ClickException(f"no log at {directory}")
    return directory


@click.group()
def wal() -> None:
    """The write-ahead log: verify it, dump it."""


@wal.command("verify")
@DATA_OPTION
@JSON_OPTION
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
        with scan_progress("verifying") as progress:
            result = scan_log(directory, files, watch=watch, progress=progress)
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
        "first_lsn": result.first_lsn,
        "last_lsn": result.last_lsn,
        "crc_checked": result.records,
        "chain_checked": result.hashed_records,
        "tail": None if tail is None else msgspec.to_builtins(tail),
    }


def _emit(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(report)
        return
    console = DataConsole(soft_wrap=True)
    if report.get("problem"):
        console.print(Text.assemble(styled("problem", "bold red"), styled(f": {report['problem']}")))
    if "records" in report:
        console.print(
            f"checked {report['records']:,} records in {report['segments']} segment(s), "
            f"{report['bytes']:,} bytes: every CRC, and the hash chain from "
            f"{'genesis' if report['first_lsn'] == 1 else 'LSN ' + format(report['first_lsn'], ',')} "
            f"to LSN {report['last_lsn']:,}"
        )
    checkpoint = report.get("checkpoint")
    if checkpoint:
        state = styled("matches") if checkpoint["matches"] else styled("does NOT match", "red")
        console.print(Text.assemble(styled(f"checkpoint at LSN {checkpoint['lsn']:,} ({checkpoint['at']}) "), state))
    tail = report.get("tail")
    if tail:
        console.print(
            Text.assemble(
                styled("incomplete tail", "yellow"),
                styled(
                    f": {tail['size']} bytes at byte {tail['offset']} of {tail['segment']} "
                    f"({tail['reason']}): a write in progress or torn by a crash; the next open truncates it"
                ),
            )
        )
    if report["ok"]:
        console.print(styled("ok", "green"))


@wal.command("dump")
@DATA_OPTION
@click.option("--from", "from_lsn", type=click.IntRange(min=1), default=1, help="First LSN.")
@click.option("--patient", help="Only records touching this patient key (authority|identifier).")
@JSON_OPTION
@click.pass_obj
def wal_dump(obj: Context, data: Path | None, from_lsn: int, patient: str | None, *, as_json: bool) -> None:
    """Show records: a table, or NDJSON with the original bytes in base64 (needs log.content; audited)."""
    directory = _wal_dir(obj, data)
    authorized(obj, directory.parent, Permission.LOG_CONTENT, patient=patient or "", action="wal_dump")
    records = list(iter_records(directory, OSFiles(), from_lsn=from_lsn, patient=patient))
    if not patient:
        audited(obj, directory.parent, Permission.LOG_CONTENT, "wal_dump", [p for r in records for p in r.patients])
    if as_json:
        out = sys.stdout.buffer
        for record in records:
            out.write(msgspec.json.encode(record_json(record)) + b"\n")
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
    DataConsole().print(table)


def metadata_json(record: LogRecord) -> dict[str, Any]:
    """What an operator may see of a record: where and what kind, no identifier, no content."""
    env = record.envelope
    return {
        "lsn": record.lsn,
        "recorded_at": record.recorded_at,
        "partition": record.partition,
        "epoch": record.epoch,
        "kind": env.kind.value,
        "type": env.message_type,
        "sender": sender_of(env.message_id),
        "control_id": control_id_of(env.message_id),
        "lane": env.lane.value,
        "reason": env.lane_reason,
        "received_at": env.received_at,
        "source": env.source,
        "event_kinds": sorted({str(e.__struct_config__.tag) for e in env.events}),
    }


def record_json(record: LogRecord) -> dict[str, Any]:
    """The whole record: identifiers, events and the original bytes (PHI)."""
    env = record.envelope
    return {
        **metadata_json(record),
        "message_id": record.message_id,
        "patients": list(record.patients),
        "events": msgspec.to_builtins(env.events),
        "raw_base64": base64.b64encode(env.raw).decode(),
    }


@click.group()
def audit() -> None:
    """The audit trail of the log."""


@audit.command("verify")
@DATA_OPTION
@JSON_OPTION
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
    trail = KeyedCheckpoints(directory, files, key)
    watch = frozenset(e.lsn for e in trail.entries())
    report: dict[str, Any] = {"directory": str(directory), "ok": True, "problem": None}
    try:
        with scan_progress("verifying") as progress:
            result = scan_log(directory, files, watch=watch, progress=progress)
    except WALCorruptError as exc:
        report.update(ok=False, problem=str(exc))
        _emit(report, as_json)
        sys.exit(1)
    report.update(_summary(result))
    hashes, first_lsn = dict(result.hashes), result.first_lsn
    archive = configured_archive(obj, directory.parent)
    if archive is not None:
        try:
            proved = archive.verify((result.first_lsn, BaseStore(directory, files).load().prev_hash), watch)
        except ArchiveError as exc:
            report.update(ok=False, problem=f"the archive at {archive.path}: {exc}")
            _emit(report, as_json)
            sys.exit(1)
        report["archive"] = {"path": str(archive.path), "segments": proved.segments, "last_lsn": proved.last_lsn}
        hashes.update(proved.hashes)
        first_lsn = proved.first_lsn or first_lsn
    count, problem = trail.verify(hashes, result.last_lsn, first_lsn)
    report["keyed_checkpoints"] = count
    if problem is not None:
        report.update(ok=False, problem=f"keyed checkpoint {problem.entry} (LSN {problem.lsn}): {problem.reason}")
    elif count == 0:
        report.update(ok=False, problem="no keyed checkpoint yet: nothing vouches for the chain")
    _emit(report, as_json)
    if not as_json:
        DataConsole(soft_wrap=True).print(f"{count} keyed checkpoint(s) checked")
    if not report["ok"]:
        sys.exit(1)
