"""`vigil quarantine list|show|retry|resend|discard|resolve`: input that could not be accepted.

`list` and `show` read the quarantine file directly (it is append-only), so
they run beside a live node. The actions go to the running node over its
admin socket; with no node running, the CLI carries them out itself on the
data directory, under the log's lock, by the same rules
(`engine.node.quarantine_desk`). Either way each action is audited.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import anyio
import click
import msgspec
from rich.table import Table

from engine.auth import Permission
from engine.cli.console import DataConsole
from engine.cli.context import DATA_OPTION, JSON_OPTION, Context, emit_json
from engine.cli.session import audit_key, authorized, call, node_or
from engine.core.decode import Decoder, decode_input
from engine.core.errors import InputError
from engine.core.hl7 import parse, patient_key
from engine.core.outcome import IngestResult, Outcome
from engine.infra.clock import utc_now
from engine.node import (
    Ingest,
    QuarantineAction,
    QuarantineActionError,
    QuarantineDesk,
    audit_detail,
    permission_for,
    refusal_of,
)
from engine.search import header_metadata
from engine.wal import OSFiles, Quarantine, WALLockedError, WriteAheadLog, open_wal

__all__ = ["quarantine"]


@click.group()
def quarantine() -> None:
    """Input that could not be accepted, kept with its reason: list, show, retry, resend, discard, resolve."""


def _quarantine(obj: Context, data: Path | None) -> Quarantine:
    return Quarantine(obj.data_dir(data) / "quarantine", OSFiles())


@quarantine.command("list")
@DATA_OPTION
@click.option("--all", "show_all", is_flag=True, help="Resolved items too.")
@JSON_OPTION
@click.pass_obj
def quarantine_list(obj: Context, data: Path | None, *, show_all: bool, as_json: bool) -> None:
    """Quarantined items (metadata only: no message content)."""
    authorized(obj, obj.data_dir(data), Permission.QUARANTINE_METADATA, action="quarantine_list")
    items = [i for i in _quarantine(obj, data).items() if show_all or i.open]
    if as_json:
        for item in items:
            doc = {k: v for k, v in msgspec.to_builtins(item).items() if k != "raw"}
            emit_json({**doc, "bytes": len(item.raw)})
        return
    table = Table(title=f"{len(items)} quarantined item(s)")
    for name in ("id", "at (UTC)"):
        table.add_column(name, no_wrap=True)
    for name in ("sender", "type", "control id", "source", "reason", "bytes", "status"):
        table.add_column(name, overflow="fold")
    for item in items:
        status = "open" if item.open else f"{item.resolved} ({item.resolved_by or 'node'})"
        sender, mtype, control_id = header_metadata(item.raw)
        at = item.at[:19].replace("T", " ")
        table.add_row(
            str(item.qid), at, sender, mtype, control_id, item.source, item.reason, str(len(item.raw)), status
        )
    DataConsole().print(table)


@quarantine.command("show")
@click.argument("qid", type=int)
@DATA_OPTION
@JSON_OPTION
@click.pass_obj
def quarantine_show(obj: Context, qid: int, data: Path | None, *, as_json: bool) -> None:
    """One item, with its original bytes (base64 in JSON): message content, so it needs quarantine.content.

    An operator gets it by breaking the glass for the message's patient; a
    message whose patient cannot be read needs the permission by role.
    """
    item = _quarantine(obj, data).get(qid)
    if item is None:
        raise click.ClickException(f"no quarantined item {qid}")
    patient = quarantined_patient(item.raw)
    authorized(obj, obj.data_dir(data), Permission.QUARANTINE_CONTENT, patient=patient, action="quarantine_show")
    if as_json:
        doc = msgspec.to_builtins(item)
        doc["raw_base64"] = base64.b64encode(item.raw).decode()
        del doc["raw"]
        emit_json(doc)
        return
    console = DataConsole(soft_wrap=True)
    console.print(f"item {item.qid}, quarantined {item.at} from {item.source}: {item.reason}")
    console.print(f"error: {item.error}")
    if not item.open:
        by = f" by {item.resolved_by}" if item.resolved_by else ""
        note = f" ({item.note})" if item.note else ""
        console.print(f"resolved {item.resolved_at}{by}: {item.resolved}{note}")
    console.print(item.raw.decode("utf-8", errors="replace").replace("\r", "\n"), markup=False, highlight=False)


def quarantined_patient(raw: bytes) -> str:
    """The patient key of a refused HL7 v2 message, where its PID can still be read; else ""."""
    try:
        pid = parse(raw).segment("PID")
        return (patient_key(pid) or "") if pid is not None else ""
    except (InputError, ValueError, IndexError):
        return ""


_QID = click.argument("qid", type=click.IntRange(min=1))
_REASON = click.option("--reason", required=True, help="Why, in your words (kept with the item and audited).")


@quarantine.command("retry")
@_QID
@DATA_OPTION
@click.pass_obj
def quarantine_retry(obj: Context, qid: int, data: Path | None) -> None:
    """Send an item into the log again as it was (the configuration has changed since); it must decode now."""
    _act(obj, data, QuarantineAction.RETRY, qid)


@quarantine.command("resend")
@_QID
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    required=True,
    help="The edited message ('-' reads standard input); `quarantine show --json` gives the original.",
)
@click.option("--reason", default="", help="What was corrected (kept with the item and audited).")
@DATA_OPTION
@click.pass_obj
def quarantine_resend(obj: Context, qid: int, path: Path, reason: str, data: Path | None) -> None:
    """Send an edited copy of an item as a new message; the original stays in quarantine, resolved, beside it.

    The log record's source is `quarantine:<id>`, and the item names the
    record's LSN, so each leads to the other.
    """
    raw = sys.stdin.buffer.read() if str(path) == "-" else _read(path)
    _act(obj, data, QuarantineAction.RESEND, qid, note=reason, raw=raw)


@quarantine.command("discard")
@_QID
@_REASON
@DATA_OPTION
@click.pass_obj
def quarantine_discard(obj: Context, qid: int, reason: str, data: Path | None) -> None:
    """Close an item that must not be accepted (a test message, one sent twice by hand); it stays on file."""
    _act(obj, data, QuarantineAction.DISCARD, qid, note=reason)


@quarantine.command("resolve")
@_QID
@_REASON
@DATA_OPTION
@click.pass_obj
def quarantine_resolve(obj: Context, qid: int, reason: str, data: Path | None) -> None:
    """Close an item dealt with elsewhere (the sender sent it again, corrected); it stays on file."""
    _act(obj, data, QuarantineAction.RESOLVE, qid, note=reason)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read {path.name}: {exc.strerror}") from None


def _act(
    obj: Context, data: Path | None, action: QuarantineAction, qid: int, *, note: str = "", raw: bytes | None = None
) -> None:
    """Ask the running node to carry the action out; with none running, carry it out here."""
    data_dir = obj.data_dir(data)
    fields: dict[str, Any] = {"action": action.value, "qid": qid, "note": note}
    if raw is not None:
        fields["raw_base64"] = base64.b64encode(raw).decode()
    answer = node_or(
        obj, data_dir, "quarantine_act", lambda: _act_here(obj, data_dir, action, qid, note=note, raw=raw), **fields
    )
    DataConsole(soft_wrap=True).print(f"item {qid}: {answer['outcome']}", markup=False, highlight=False)


def _act_here(
    obj: Context, data_dir: Path, action: QuarantineAction, qid: int, *, note: str, raw: bytes | None
) -> dict[str, Any]:
    """No node runs: the same rules here, under the log's lock; audited like the node's."""
    name = f"quarantine_{action.value}"
    permission = permission_for(action)
    user = str(authorized(obj, data_dir, permission, action=name)["user"])
    decoder = obj.decoder()

    async def carried_out() -> dict[str, object] | QuarantineActionError:
        async with open_wal(data_dir / "wal", obj.config.wal, audit_key=audit_key(obj)) as log:
            desk = QuarantineDesk(
                Quarantine(data_dir / "quarantine", OSFiles()), _into(log, decoder), refusal_of(decoder)
            )
            try:
                return await desk.act(action, qid, by=user, note=note, raw=raw)
            except QuarantineActionError as refused:  # carried out of the log's task group as a value
                return refused

    try:
        answer = anyio.run(carried_out)
    except WALLockedError:
        raise click.ClickException(f"the log on {data_dir} is busy (a node is starting): retry") from None
    if isinstance(answer, QuarantineActionError):
        call(
            obj,
            data_dir,
            "acted",
            permission=permission.value,
            action=name,
            detail=audit_detail(qid, f"not done: {answer}"),
        )
        raise click.ClickException(str(answer))
    detail = audit_detail(qid, str(answer["outcome"]), note)
    call(obj, data_dir, "acted", permission=permission.value, action=name, detail=detail)
    return answer


def _into(log: WriteAheadLog, decoder: Decoder) -> Ingest:
    """A stopped node's way in: decoded here (the desk has checked it is accepted) and appended."""

    async def ingest(raw: bytes, source: str) -> list[IngestResult]:
        decoded = decode_input(raw, decoder, received_at=utc_now(), source=source)
        envelopes = [d.envelope for d in decoded if d.envelope is not None]
        positions = await log.append(envelopes)
        return [IngestResult(Outcome.ACCEPTED, (p.lsn,), duplicate=p.duplicate) for p in positions]

    return ingest
