"""`vigil status`, `vigil top`, `vigil patient`: what an operator looks at.

`status` asks the running node (admin socket). `patient` asks the node's
patient actor when a node runs, else folds the record from the log itself
(read-only): the record is a function of the log either way. (`log` is
`engine.cli.message_log`.)
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from actors import MOMENT_RULE, PatientRecord
from engine.auth import Permission
from engine.cli.console import DataConsole, styled
from engine.cli.context import DATA_OPTION, JSON_OPTION, Context, emit_json, strict_moment
from engine.cli.session import authorized, call, node_or
from engine.wal import OSFiles, PackedSnapshotStore, iter_records

__all__ = ["patient", "status", "top"]

_RECORD = msgspec.msgpack.Decoder(PatientRecord)

_WIDE = 110  # columns from which `vigil log` shows each record's event kinds too


@click.command("status")
@DATA_OPTION
@JSON_OPTION
@click.pass_obj
def status(obj: Context, data: Path | None, *, as_json: bool) -> None:
    """The running node: uptime, LSN, lanes, actors, quarantine, sources."""
    report = call(obj, obj.data_dir(data), "status")
    if as_json:
        emit_json(report)
        return
    DataConsole(soft_wrap=True).print(_status_view(report))


def _by_age(counts: dict[str, int]) -> str:
    """Open quarantine items by age, the older first: " (2 over a day old, 1 over an hour)"; "" when none is."""
    parts = [
        f"{counts[k]} {label}"
        for k, label in (("over_1d", "over a day old"), ("1h_to_1d", "over an hour"))
        if counts.get(k)
    ]
    return f" ({', '.join(parts)})" if parts else ""


def _status_view(report: dict[str, Any]) -> Group:
    """The status as one renderable: a summary line, the lanes table, the actors line."""
    wal = report["wal"]
    summary = Text.assemble(
        styled(report["node"], "bold"),
        f" up {report['uptime_s']:.0f} s; log at LSN {wal['last_lsn']:,} "
        f"({wal['segments']} segments); {wal['duplicate_records']:,} duplicates answered again, "
        f"{wal['reused_control_ids']:,} control ids reused (stored as new messages); {report['in_flight']} in flight; "
        f"{report['quarantine_open']} open in quarantine{_by_age(report.get('quarantine_open_by_age', {}))}; "
        f"{report.get('invalid_text_messages', 0):,} with invalid text replaced; mllp: {report['sources']['mllp']}",
    )
    table = Table(title="Lanes")
    for name in ("lane", "depth/capacity", "running", "done", "failed", "wait p99 ms", "p50 ms", "p99 ms"):
        table.add_column(name, justify="left" if name == "lane" else "right")
    for lane in report["lanes"]:
        table.add_row(
            lane["lane"],
            f"{lane['depth']:,}/{lane['capacity']:,}",
            str(lane["running"]),
            f"{lane['done']:,}",
            str(lane["failed"]),
            f"{lane['wait_p99_us'] / 1000:.2f}",
            f"{lane['total_p50_us'] / 1000:.2f}",
            f"{lane['total_p99_us'] / 1000:.2f}",
        )
    actors = report["actors"]
    if isinstance(actors, dict):
        tail = Text(
            f"patient actors: {actors['active']} active, {actors['activations']} activations, "
            f"{actors['passivations']} passivations, {actors['restarts']} restarts, "
            f"{actors['quarantined']} poison records"
        )
    else:
        tail = Text(f"patient actors: {actors}")
    projections = report.get("projections", "off")
    if isinstance(projections, dict):
        read_side = Text(
            f"read side: {projections['state']}; {projections['lag_records']:,} records behind "
            f"({projections['lag_s']:.1f} s); visible p99 {projections['visible_p99_ms']:.0f} ms, "
            f"critical worklist p99 {projections['critical_visible_p99_ms']:.0f} ms; "
            f"{projections['issues_noted']:,} data issues"
        )
    else:
        read_side = Text("read side: off (no PostgreSQL DSN configured)")
    search = report.get("search", "off")
    if isinstance(search, dict):
        behind = max(wal["last_lsn"] - search["indexed_to"], 0)
        read_side += Text(f"; message search: indexed to LSN {search['indexed_to']:,} ({behind:,} records behind)")
    else:
        read_side += Text("; message search: off (`vigil log` indexes the log itself)")
    auth = report.get("auth", {})
    sessions = Text(
        f"sessions: {auth.get('sessions_active', 0)} active, {auth.get('sessions_locked', 0)} locked; "
        f"break-the-glass reviews open: {auth.get('break_glass_reviews_open', 0)}"
    )
    cluster = report.get("cluster", "off")
    if isinstance(cluster, dict):
        membership = Text(
            f"cluster: nats {cluster['nats']}; serving {len(cluster['serving'])} of {cluster['partitions']} "
            f"partitions ({', '.join(str(p) for p in cluster['serving']) or 'none'}); members "
            f"{', '.join(cluster['members'])}; replication lag {cluster['replication_lag_records']:,} records; "
            f"{cluster['takeovers']} takeovers, {cluster['forwarded_messages']:,} forwarded, {cluster['fenced']} fenced"
        )
    else:
        membership = Text("cluster: off (a single node)")
    membership += _retention_line(report.get("retention", "off"))
    audit = report.get("audit", {})
    if audit.get("keyed"):
        keyed = Text("audit: keyed checkpoints on")
    else:
        keyed = styled(
            f"audit: NOT KEYED (${audit.get('key_env', 'VIGIL_AUDIT_KEY')} was unset at start): the hash chain "
            "can be rebuilt by whoever can rewrite the log",
            "bold red",
        )
    return Group(
        summary,
        _alerts_view(report.get("alerts")),
        table,
        _supervision_table(report.get("supervision", [])),
        tail,
        read_side,
        sessions,
        membership,
        keyed,
    )


def _retention_line(retention: object) -> Text:
    """What the archive holds, where the log begins, and why the next segment stays."""
    if not isinstance(retention, dict):
        return Text("\nretention: off (the log keeps every record)")
    return Text(
        f"\nretention: {retention['archived_segments']:,} segments archived in {retention['archive']} "
        f"(through LSN {retention['archived_through_lsn']:,}); the log begins at LSN "
        f"{retention['log_first_lsn']:,}; the next stays: {retention['kept_because']}"
    )


def _alerts_view(alerts: object) -> Text | Table:
    """The alerts that hold, oldest first, in red; one quiet line when none does."""
    if not isinstance(alerts, dict):
        return Text(f"alerts: {alerts or 'off'}")
    hook = alerts["webhook"]
    sent, failed = alerts["webhook_sent"], alerts["webhook_failed"]
    webhook = "" if hook == "off" else f"; webhook {hook}: {sent} sent, {failed} failed"
    if not alerts["active"]:
        return Text(f"alerts: none active ({alerts['raised_total']} raised since start){webhook}")
    table = Table(title=f"Alerts ({len(alerts['active'])} active){webhook}", title_style="bold red")
    for name in ("rule", "subject", "detail", "since (UTC)"):
        table.add_column(name)
    for alert in alerts["active"]:
        since = datetime.fromtimestamp(alert["since_us"] / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(styled(alert["rule"], "bold red"), styled(alert["subject"]), styled(alert["detail"]), since)
    return table


def _supervision_table(children: list[dict[str, Any]]) -> Table:
    """The node's supervision tree: each part in start order, its state, restarts and last error."""
    table = Table(title="Supervision (node)")
    for name in ("part", "state", "restarts", "last error"):
        table.add_column(name, justify="right" if name == "restarts" else "left")
    for child in children:
        state = child["state"]
        table.add_row(
            styled(child["name"]),
            styled(state, "bold red" if state == "restarting" else ""),
            str(child["restarts"]),
            styled(child["last_error"] or "-"),
        )
    return table


@click.command("top")
@DATA_OPTION
@click.option("--interval-s", default=1.0, show_default=True, help="Seconds between refreshes.")
@click.pass_obj
def top(obj: Context, data: Path | None, interval_s: float) -> None:
    """`status`, live, refreshing in the terminal until Ctrl-C."""
    directory = obj.data_dir(data)
    try:
        with Live(_status_view(call(obj, directory, "status")), refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(interval_s)
                # A refresh is not the person at the screen: it does not hold off the idle lock.
                live.update(_status_view(call(obj, directory, "status", passive=True)))
    except KeyboardInterrupt:
        return


@click.command("patient")
@click.argument("key")
@click.option(
    "--as-of", "as_of", callback=strict_moment, help=f"The record as of a clinical time, as now known ({MOMENT_RULE})."
)
@click.option("--as-known-at", "known_at", callback=strict_moment, help="The record as the system knew it at a time.")
@DATA_OPTION
@JSON_OPTION
@click.pass_obj
def patient(
    obj: Context, key: str, as_of: str | None, known_at: str | None, data: Path | None, *, as_json: bool
) -> None:
    """One patient's record (KEY is authority|identifier, as `vigil inspect` shows it)."""
    directory = obj.data_dir(data)

    def here() -> Any:
        authorized(obj, directory, Permission.RECORD_READ, patient=key, action="record")
        return _from_log(directory, key, as_of=as_of, known_at=known_at)

    view = node_or(obj, directory, "patient", here, key=key, as_of=as_of, known_at=known_at)
    if not view.get("facts") and as_of is None and known_at is None:  # no patient: say so, not an empty chart
        raise click.ClickException(f"no record of {key}: no message about this patient has arrived")
    if as_json:
        emit_json(view)
        return
    _print_record(view, as_of=as_of, known_at=known_at)


def _from_log(directory: Path, key: str, *, as_of: str | None, known_at: str | None) -> Any:
    wal_dir = directory / "wal"
    if not wal_dir.is_dir():
        raise click.ClickException(f"no log at {wal_dir}")
    record = _snapshot_of(directory, key)  # what the log may no longer hold (retention archived it)
    for r in iter_records(wal_dir, OSFiles(), from_lsn=record.last_lsn + 1, patient=key):
        record = record.apply(r.lsn, r.recorded_at, r.message_id, r.envelope.events)
    if not record.fact_count:
        raise click.ClickException(f"no record of {key} in {wal_dir}")
    return msgspec.to_builtins(record.view(as_of=as_of, known_at=known_at))


def _snapshot_of(directory: Path, key: str) -> PatientRecord:
    """The patient's newest snapshot (the record the node kept), else an empty record."""
    if not (directory / "snapshots").is_dir():
        return PatientRecord.empty(key)
    store = PackedSnapshotStore(directory / "snapshots", OSFiles())
    try:
        snapshot = store.load(key)
    finally:
        store.close()
    return _RECORD.decode(snapshot.state) if snapshot is not None else PatientRecord.empty(key)


def _print_record(view: Any, *, as_of: str | None, known_at: str | None) -> None:
    console = DataConsole(soft_wrap=True)
    when = f" as of {as_of}" if as_of else ""
    when += f" as known at {known_at}" if known_at else ""
    head = f"{when}: {view['facts']} facts up to LSN {view['last_lsn']}"
    console.print(Text.assemble(styled(view["patient"], "bold"), styled(head)))
    demographics = view.get("demographics")
    if demographics:
        console.print(
            f"  {demographics.get('family', '')}, {' '.join(demographics.get('given', []))}; "
            f"born {demographics.get('birth_date') or '?'}; sex {demographics.get('sex') or '?'}"
        )
    for enc in view["encounters"]:
        console.print(f"  encounter {enc['encounter_id']}: {enc['status']} ({enc.get('location') or '-'})")
    for order in view["orders"]:
        console.print(f"  order {order['order_id']}: {order['status']}")
    for result in view["results"]:
        current = result["current"]
        history = " -> ".join(f"{v[-1].get('value', '')} (LSN {v[0]})" for v in result["versions"])
        flags = ",".join(current.get("abnormal_flags", []))
        line = (
            f"  result {current['code'].get('text') or current['code']['code']}: {current.get('value', '')} "
            f"{current.get('units', '')} {flags} "
        )
        console.print(Text.assemble(styled(line), styled(history, "dim")))
    for med in view["medications"]:
        console.print(f"  medication {med['order_id']}: {med['status']}")
    for allergy in view["allergies"]:
        console.print(f"  allergy {allergy['allergen'].get('text') or allergy['allergen']['code']}")
