"""`vigil backup DIR` and `vigil restore BACKUP`: a data directory copied while its node serves, and returned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import click

from engine.auth import Permission
from engine.backup import BackupError, check_backup, restore_backup, take_backup
from engine.cli.console import DataConsole
from engine.cli.context import DATA_OPTION, JSON_OPTION, Context, emit_json
from engine.cli.session import audit_key, authorized, call, node_or
from engine.wal import WALLockedError, open_wal

__all__ = ["backup", "restore"]


@click.command("backup")
@click.argument("dest", type=click.Path(path_type=Path, file_okay=False))
@DATA_OPTION
@JSON_OPTION
@click.pass_obj
def backup(obj: Context, dest: Path, data: Path | None, as_json: bool) -> None:
    """Copy the data directory into DEST (new or empty), consistent, while the node serves.

    The log up to its durable end, the audit checkpoints, accounts and
    sessions, the quarantine, the routes' positions; never a key. Needs
    data.backup (administrators); audited. With no node running it is taken
    here, under the log's lock.
    """
    data_dir = obj.data_dir(data)
    dest = dest.resolve()
    answer = node_or(obj, data_dir, "backup", lambda: _backup_here(obj, data_dir, dest), dest=str(dest))
    if as_json:
        emit_json(answer)
        return
    line = f"backup in {answer['dest']}: the log through LSN {answer['last_lsn']:,}, {answer['files']} files, "
    DataConsole(soft_wrap=True).print(f"{line}{answer['bytes']:,} bytes", markup=False, highlight=False)


def _backup_here(obj: Context, data_dir: Path, dest: Path) -> dict[str, Any]:
    authorized(obj, data_dir, Permission.DATA_BACKUP, action="backup")

    async def taken() -> dict[str, Any] | BackupError:
        async with open_wal(data_dir / "wal", obj.config.wal, audit_key=audit_key(obj)) as log:
            try:
                manifest = await take_backup(data_dir, log, dest, node=obj.config.node.id)
            except BackupError as exc:  # carried out of the log's task group as a value
                return exc
            return manifest.summary(str(dest))

    try:
        answer = anyio.run(taken)
    except WALLockedError:
        raise click.ClickException(f"the log on {data_dir} is busy (a node is starting): retry") from None
    done = "failed" if isinstance(answer, BackupError) else f"through LSN {answer['last_lsn']}"
    call(obj, data_dir, "acted", permission=Permission.DATA_BACKUP.value, action="backup", detail=f"to {dest}: {done}")
    if isinstance(answer, BackupError):
        raise click.ClickException(str(answer))
    return answer


@click.command("restore")
@click.argument("source", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--check", is_flag=True, help="Check the backup where it lies and restore nothing.")
@DATA_OPTION
@click.pass_obj
def restore(obj: Context, source: Path, data: Path | None, *, check: bool) -> None:
    """Restore the backup in SOURCE into the data directory (new or empty), every file checked first.

    Each file's size and SHA-256 against the manifest, then the log's
    recovery checks every record's CRC and the hash chain to the backup's
    LSN. Then `vigil audit verify` (with the audit key) proves the chain.
    With --check, the same checks on the backup where it lies (the log's copy
    scanned in place), and nothing is restored: a drill for every night.
    """
    out = DataConsole(soft_wrap=True)
    try:
        if check:
            manifest, records = check_backup(source)
            line = f"backup in {source} is whole: {len(manifest.files)} files as its manifest says, "
            out.print(f"{line}the log's {records:,} records verified to LSN {manifest.last_lsn:,}", markup=False)
            return
        data_dir = obj.data_dir(data)
        manifest = anyio.run(restore_backup, source, data_dir, obj.config.wal)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    line = f"restored {len(manifest.files)} files from {source} (node {manifest.node}, taken {manifest.taken_at}) "
    out.print(
        f"{line}into {data_dir}: the log recovered through LSN {manifest.last_lsn:,}", markup=False, highlight=False
    )
