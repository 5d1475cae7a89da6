"""`vigil log`: search what arrived, by control id, sender, type, time, lane and outcome (metadata, no PHI).

The search answers from the message search index (`engine.search`), which
the node keeps up with its log; before answering, the command brings it up to
the log on disk itself (a node killed mid-way, search off, or no node), so a
message acknowledged a moment ago is found. Rejected input is not in the log:
`--outcome rejected` lists the quarantine's refusals, read from its file.

One patient's history (`--patient`) or the messages' content (`--content`)
is PHI: it needs `log.content` and each patient shown is audited.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

import click
import msgspec
from rich import box
from rich.table import Table

from engine.auth import Permission
from engine.cli.archive import configured_archive
from engine.cli.console import DataConsole
from engine.cli.context import DATA_OPTION, JSON_OPTION, Context, emit_json, strict_moment
from engine.cli.session import audited, authorized
from engine.cli.wal import record_json
from engine.core.model import Lane
from engine.retention import ArchiveError, ArchiveFolder, whole_history
from engine.search import (
    MessageRow,
    Outcome,
    SearchIndex,
    SearchQuery,
    catch_up_files,
    decode_row,
    header_metadata,
    row_of,
)
from engine.wal import POISON_RECORD, LogRecord, OSFiles, Quarantine

__all__ = ["log"]

_WIDE = 110  # columns from which the table shows each message's source too


@click.command("log")
@click.option("--control-id", help="Only messages with this control id (MSH-10; a FHIR message's id).")
@click.option("--sender", help="Only messages from APP^FAC (MSH-3^MSH-4), or from APP at any facility.")
@click.option("--type", "message_type", help="Only this message type: ORU^R01, or ADT^* for every trigger.")
@click.option("--since", callback=strict_moment, help="Only messages recorded at or after this time (ISO 8601, UTC).")
@click.option("--until", callback=strict_moment, help="Only messages recorded before this time.")
@click.option("--lane", type=click.Choice([lane.value for lane in Lane]), help="Only this lane.")
@click.option(
    "--outcome",
    "outcomes",
    multiple=True,
    type=click.Choice([o.value for o in Outcome]),
    help="accepted, reused (a control id another message had) or rejected (in quarantine); repeatable. "
    "Default: what is in the log (accepted and reused).",
)
@click.option("--from", "from_lsn", type=click.IntRange(min=1), default=1, help="First LSN.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True, help="At most this many.")
@click.option("--patient", help="Only records touching this patient key (PHI: needs log.content).")
@click.option("--content", is_flag=True, help="Events and original bytes in --json (needs log.content).")
@DATA_OPTION
@JSON_OPTION
@click.pass_obj
def log(
    obj: Context,
    *,
    control_id: str | None,
    sender: str | None,
    message_type: str | None,
    since: str | None,
    until: str | None,
    lane: str | None,
    outcomes: tuple[str, ...],
    from_lsn: int,
    limit: int,
    patient: str | None,
    data: Path | None,
    content: bool,
    as_json: bool,
) -> None:
    """Search what arrived: in which lane, from whom, what became of it (metadata, no identifiers).

    Without --patient or --content it shows metadata only: LSN, time, lane,
    type, sender, control id, outcome. Fast on a log of millions: an index
    answers, not a scan of the log.
    """
    directory = obj.data_dir(data)
    wal_dir = directory / "wal"
    phi = bool(patient) or content
    permission = Permission.LOG_CONTENT if phi else Permission.LOG_METADATA
    authorized(obj, directory, permission, patient=patient or "", action="log")
    if not wal_dir.is_dir():
        raise click.ClickException(f"no log at {wal_dir}")
    wanted = frozenset(Outcome(o) for o in outcomes) or frozenset({Outcome.ACCEPTED, Outcome.REUSED})
    query = SearchQuery(control_id, sender, message_type, since, until, lane, wanted, from_lsn)
    archive = configured_archive(obj, directory)
    rows = _search(directory, query, limit, patient, archive)
    if content:
        records = _records(wal_dir, archive, [r.lsn for r in rows if r.lsn])
        if not patient:
            audited(obj, directory, permission, "log", [p for r in records for p in r.patients])
        for record in records:
            emit_json(record_json(record))
        return
    if as_json:
        for row in rows:
            emit_json(msgspec.to_builtins(row))
        return
    _print(rows, limit)


def _search(
    directory: Path, query: SearchQuery, limit: int, patient: str | None, archive: ArchiveFolder | None
) -> list[MessageRow]:
    """The rows a search finds, from the index brought up to the log (and the quarantine's refusals)."""
    try:
        index = SearchIndex.of(directory)
    except (OSError, sqlite3.Error) as exc:
        raise click.ClickException(f"cannot open the search index in {directory}: {exc}") from None
    try:
        catch_up_files(index, directory / "wal")
        if patient is not None:
            found = _patient_rows(index, directory / "wal", archive, patient, query)
        else:
            found = index.search(query, limit=limit) if query.outcomes - {Outcome.REJECTED} else []
    except sqlite3.Error as exc:
        raise click.ClickException(
            f"the search index in {directory} failed ({exc}): delete it to have it made again"
        ) from None
    except ArchiveError as exc:
        raise click.ClickException(f"the archive cannot be read: {exc}") from None
    finally:
        index.close()
    if Outcome.REJECTED in query.outcomes and patient is None:
        found += _refusals(directory, query)
    return found[:limit]


def _patient_rows(
    index: SearchIndex, wal_dir: Path, archive: ArchiveFolder | None, patient: str, query: SearchQuery
) -> list[MessageRow]:
    """One patient's records (from the archive and the log: the index holds no patient), with the index's outcomes."""
    history = whole_history(archive, wal_dir, from_lsn=query.from_lsn, patient=patient, decode=decode_row)
    rows = [row_of(r) for r in history]
    outcomes = index.outcomes([r.lsn for r in rows])
    rows = [msgspec.structs.replace(r, outcome=outcomes.get(r.lsn, r.outcome)) for r in rows]
    return [r for r in rows if query.matches(r)]


def _refusals(directory: Path, query: SearchQuery) -> list[MessageRow]:
    """Refused input the search finds, oldest first: from the quarantine file (refusals are not in the log)."""
    found = []
    for item in Quarantine(directory / "quarantine", OSFiles()).items():
        if item.error.get("type") == POISON_RECORD:
            continue  # a logged record its actor failed on: it was accepted, and is in the log
        sender, mtype, control_id = header_metadata(item.raw)
        row = MessageRow(
            0, item.at, "", "", mtype, sender, control_id, item.source, item.reason, Outcome.REJECTED, qid=item.qid
        )
        if query.matches(row):
            found.append(row)
    return found


def _records(wal_dir: Path, archive: ArchiveFolder | None, lsns: Iterable[int]) -> list[LogRecord]:
    """The whole records at these LSNs (content: read from the archive and the log's files)."""
    wanted = set(lsns)
    if not wanted:
        return []
    out, last = [], max(wanted)
    try:
        for record in whole_history(archive, wal_dir, from_lsn=min(wanted)):
            if record.lsn in wanted:
                out.append(record)
            if record.lsn >= last:
                break
    except ArchiveError as exc:
        raise click.ClickException(f"the archive cannot be read: {exc}") from None
    return out


def _print(rows: list[MessageRow], limit: int) -> None:
    console = DataConsole()
    wide = console.width >= _WIDE
    outcome = any(r.outcome is not Outcome.ACCEPTED for r in rows)  # a column only when it says something
    more = f"; the first {limit}: narrow the search, or --from, --limit" if len(rows) >= limit else ""
    # No vertical rules: at 80 columns every character goes to the data.
    table = Table(
        caption=f"{len(rows):,} message(s){more}; why each went to its lane: --json",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for name in ("LSN", "recorded (UTC)", "lane", "type"):
        table.add_column(name, no_wrap=True)
    table.add_column("sender", overflow="fold", min_width=11)
    table.add_column("control id", overflow="fold", min_width=10)
    if outcome:
        table.add_column("outcome", min_width=8)
    if wide:
        table.add_column("source", overflow="fold")
    for row in rows:
        cells = [
            str(row.lsn) if row.lsn else f"q{row.qid}",
            row.at[:19].replace("T", " "),  # to the second: one line
            row.lane or "-",
            row.message_type,
            row.sender,
            row.control_id,
        ]
        if outcome:
            cells.append(row.outcome.value)
        if wide:
            cells.append(row.source)
        table.add_row(*cells)
    console.print(table)
