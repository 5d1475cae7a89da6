"""`vigil archive`: the segments retention moved out of the log, listed and proved."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import msgspec
from rich.table import Table

from engine.cli.console import DataConsole
from engine.cli.context import DATA_OPTION, JSON_OPTION, Context, emit_json
from engine.retention import ArchiveError, ArchiveFolder
from engine.wal import BaseStore, OSFiles

__all__ = ["archive", "configured_archive"]

_FOLDER_OPTION = click.option(
    "--folder",
    type=click.Path(path_type=Path, file_okay=False),
    help="An archive folder elsewhere (moved off the node); default: retention.archive of the data directory.",
)


@click.group()
def archive() -> None:
    """Segments retention moved out of the log ([retention] archive)."""


def configured_archive(obj: Context, data_dir: Path) -> ArchiveFolder | None:
    """The data directory's archive (`retention.archive`), or None when retention is off."""
    if not obj.config.retention.enabled:
        return None
    return ArchiveFolder(obj.config.retention.folder(data_dir))


def _folder(obj: Context, data: Path | None, folder: Path | None) -> ArchiveFolder:
    if folder is not None:
        return ArchiveFolder(folder)
    if not obj.config.retention.enabled:
        raise click.ClickException("no archive: retention.archive is not set (give --folder for one elsewhere)")
    return ArchiveFolder(obj.config.retention.folder(obj.data_dir(data)))


@archive.command("list")
@DATA_OPTION
@_FOLDER_OPTION
@JSON_OPTION
@click.pass_obj
def archive_list(obj: Context, data: Path | None, folder: Path | None, *, as_json: bool) -> None:
    """The archived segments: LSNs, record times, when archived (metadata: no PHI)."""
    try:
        entries = _folder(obj, data, folder).entries()
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        for entry in entries:
            emit_json(msgspec.to_builtins(entry))
        return
    table = Table(caption=f"{len(entries)} archived segment(s)")
    for name in ("segment", "LSNs", "records from", "to", "archived"):
        table.add_column(name, no_wrap=True)
    for e in entries:
        table.add_row(e.segment, f"{e.first_lsn:,}-{e.last_lsn:,}", e.oldest[:19], e.newest[:19], e.archived_at[:19])
    DataConsole().print(table)


@archive.command("verify")
@DATA_OPTION
@_FOLDER_OPTION
@JSON_OPTION
@click.pass_obj
def archive_verify(obj: Context, data: Path | None, folder: Path | None, *, as_json: bool) -> None:
    """Prove the archive: every segment's SHA-256 and CRCs, LSNs in sequence, the hash chain through them.

    With the data directory's own archive, the chain must also end where the
    log's begins (its base). `vigil audit verify` proves both with the keyed
    checkpoints. Exit 1 on any problem.
    """
    target = _folder(obj, data, folder)
    base = None
    if folder is None:
        stored = BaseStore(obj.data_dir(data) / "wal", OSFiles()).load()
        base = (stored.first_lsn, stored.prev_hash)
    report: dict[str, object] = {"archive": str(target.path), "ok": True, "problem": None}
    try:
        proved = target.verify(base)
    except ArchiveError as exc:
        report.update(ok=False, problem=str(exc))
    else:
        report.update(segments=proved.segments, first_lsn=proved.first_lsn, last_lsn=proved.last_lsn)
    if as_json:
        emit_json(report)
    elif report["ok"]:
        tail = "; the log begins where it ends" if base is not None else ""
        DataConsole(soft_wrap=True).print(
            f"archive ok: {proved.segments} segment(s), LSN {proved.first_lsn:,} to {proved.last_lsn:,}{tail}"
        )
    else:
        DataConsole(soft_wrap=True, stderr=True).print(f"archive damaged: {report['problem']}")
    if not report["ok"]:
        sys.exit(1)
