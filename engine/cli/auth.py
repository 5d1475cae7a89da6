"""`vigil login|unlock|lock|logout|whoami|break-glass`, `vigil user ...`, and the audit trail's commands.

Secrets (password, PIN) are asked at a hidden prompt, or read one per line
from standard input with `--secrets-stdin` (scripts, tests); never taken as
an argument, where they would land in shell history and `ps`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from engine.auth import AUDIT_MESSAGE_TYPE, Permission, Role, Setting, fhir_audit_event
from engine.cli.archive import configured_archive
from engine.cli.console import DataConsole, inert, styled
from engine.cli.context import DATA_OPTION, JSON_OPTION, Context, emit_json
from engine.cli.session import authorized, call, device_of, forget_session, keep_session, session_file
from engine.core.model import Kind, RecordAccessed
from engine.retention import ArchiveError, whole_history
from engine.wal import LogRecord

__all__ = ["AUDIT_COMMANDS", "break_glass", "lock", "login", "logout", "passwd", "unlock", "user", "whoami"]

SECRETS_STDIN = click.option(
    "--secrets-stdin",
    "secrets_stdin",
    is_flag=True,
    help="Read the secrets from standard input, one per line, in the order the command's help gives.",
)


class _Secrets:
    """Secrets from a hidden prompt, or the next lines of stdin."""

    def __init__(self, *, from_stdin: bool) -> None:
        self._lines: Iterator[str] | None = iter(sys.stdin.read().splitlines()) if from_stdin else None

    def ask(self, prompt: str) -> str:
        if self._lines is None:
            return str(click.prompt(prompt, hide_input=True))
        secret = next(self._lines, None)
        if secret is None:
            raise click.ClickException(f"standard input ended before the {prompt.lower()}")
        return secret


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min"


@click.command("login")
@click.argument("user_id", metavar="USER")
@SECRETS_STDIN
@DATA_OPTION
@JSON_OPTION
@click.pass_obj
def login(obj: Context, user_id: str, data: Path | None, *, secrets_stdin: bool, as_json: bool) -> None:
    """Start a session bound to you, this workstation's clinical setting and this device."""
    directory = obj.data_dir(data)
    setting = obj.config.workstation.setting
    password = _Secrets(from_stdin=secrets_stdin).ask("Password")
    reply = call(obj, directory, "login", user=user_id, password=password, setting=setting.value, device=device_of(obj))
    if session_file(obj, directory).exists():
        # One session per workstation user: the one this login replaces ends now, not at its timeout.
        with contextlib.suppress(click.ClickException):
            call(obj, directory, "logout")
    keep_session(obj, directory, reply.pop("token"), reply["device"], user_id)
    if as_json:
        emit_json(reply)
        return
    auth = obj.config.auth
    click.echo(
        f"logged in as {user_id} ({setting.value} on {reply['device']}): locks after "
        f"{_minutes(auth.idle_timeout_s.of(setting))} idle (resume with `vigil unlock`), "
        f"ends after {auth.absolute_timeout_s / 3600:g} h"
    )


@click.command("unlock")
@SECRETS_STDIN
@DATA_OPTION
@JSON_OPTION
@click.pass_obj
def unlock(obj: Context, data: Path | None, *, secrets_stdin: bool, as_json: bool) -> None:
    """Resume a locked session with your PIN; your context (patient, last queries) is as you left it."""
    directory = obj.data_dir(data)
    pin = _Secrets(from_stdin=secrets_stdin).ask("PIN")
    reply = call(obj, directory, "unlock", pin=pin)
    if as_json:
        emit_json(reply)
        return
    context = reply.get("context") or {}
    patient = context.get("patient")
    click.echo(inert(f"unlocked: {reply['user']}" + (f"; current patient {patient}" if patient else "")))
    for action, key in context.get("queries", []):
        click.echo(inert(f"  recent: {action} {key}"))


@click.command("lock")
@DATA_OPTION
@click.pass_obj
def lock(obj: Context, data: Path | None) -> None:
    """Lock your session now (walking away): the PIN resumes it."""
    call(obj, obj.data_dir(data), "lock")
    click.echo("locked: `vigil unlock` resumes the session")


@click.command("logout")
@DATA_OPTION
@click.pass_obj
def logout(obj: Context, data: Path | None) -> None:
    """End your session: its token is refused from now on."""
    directory = obj.data_dir(data)
    call(obj, directory, "logout")
    forget_session(obj, directory)
    click.echo("logged out")


@click.command("whoami")
@DATA_OPTION
@JSON_OPTION
@click.pass_obj
def whoami(obj: Context, data: Path | None, *, as_json: bool) -> None:
    """Your session: user, setting, device, state (active, locked, ended)."""
    reply = call(obj, obj.data_dir(data), "whoami")
    if as_json:
        emit_json(reply)
        return
    state = reply["state"] + (f" ({reply['why']})" if reply["why"] else "")
    click.echo(inert(f"{reply['user']} at {reply['setting']} on {reply['device']}: {state}"))


@click.command("break-glass")
@click.argument("patient")
@click.option("--reason", default="", help="A reason code (see [auth] break_glass_reasons).")
@click.option("--note", default="", help="What happened, for the privacy officer's review.")
@SECRETS_STDIN
@DATA_OPTION
@JSON_OPTION
@click.pass_obj
def break_glass(
    obj: Context, patient: str, reason: str, note: str, data: Path | None, *, secrets_stdin: bool, as_json: bool
) -> None:
    """Emergency access to one patient, for a limited time: re-authenticate, give a reason; it is reviewed."""
    emergency = obj.config.workstation.setting is Setting.EMERGENCY_DEPARTMENT
    secret = _Secrets(from_stdin=secrets_stdin).ask("PIN or password" if emergency else "Password")
    grant = call(obj, obj.data_dir(data), "break_glass", patient=patient, reason=reason, note=note, secret=secret)
    if as_json:
        emit_json(grant)
        return
    until = datetime.fromtimestamp(grant["expires_at"], UTC).isoformat(timespec="seconds")
    click.echo(inert(f"break-the-glass: access to {patient} until {until} ({reason}); recorded and sent for review"))


@click.command("passwd")
@click.option("--password/--no-password", "new_password", default=True, help="Set a new password.")
@click.option("--pin/--no-pin", "new_pin", default=False, help="Set a new PIN.")
@SECRETS_STDIN
@DATA_OPTION
@click.pass_obj
def passwd(obj: Context, data: Path | None, *, new_password: bool, new_pin: bool, secrets_stdin: bool) -> None:
    """Change your own password and/or PIN (your current password first); your other sessions end.

    With --secrets-stdin: the current password, then the new password (unless
    --no-password), then the new PIN (with --pin), one per line.
    """
    secrets = _Secrets(from_stdin=secrets_stdin)
    current = secrets.ask("Current password")
    password = secrets.ask("New password") if new_password else ""
    pin = secrets.ask("New PIN") if new_pin else ""
    call(obj, obj.data_dir(data), "secrets_change", current=current, password=password, pin=pin)
    click.echo("changed: " + " and ".join(w for w, new in (("password", password), ("PIN", pin)) if new))


# -- accounts -----------------------------------------------------------------------------

_ROLE = click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice([r.value for r in Role]),
    help="A role (repeat for several).",
)


@click.group()
def user() -> None:
    """Accounts (administrators; the very first administrator needs no session)."""


@user.command("add")
@click.argument("user_id", metavar="USER")
@_ROLE
@click.option("--name", default="", help="The person's name, as colleagues know it.")
@SECRETS_STDIN
@DATA_OPTION
@click.pass_obj
def user_add(
    obj: Context, user_id: str, roles: tuple[str, ...], name: str, data: Path | None, *, secrets_stdin: bool
) -> None:
    """Add an account with its first password and PIN (one person, one id: no shared accounts).

    With --secrets-stdin: the password, then the PIN, one per line.
    """
    secrets = _Secrets(from_stdin=secrets_stdin)
    password, pin = secrets.ask("Password"), secrets.ask("PIN")
    reply = call(
        obj, obj.data_dir(data), "user_add", user=user_id, name=name, roles=list(roles), password=password, pin=pin
    )
    first = " (the first administrator)" if reply["first_administrator"] else ""
    click.echo(f"added {user_id}: {', '.join(roles)}{first}")


@user.command("disable")
@click.argument("user_id", metavar="USER")
@DATA_OPTION
@click.pass_obj
def user_disable(obj: Context, user_id: str, data: Path | None) -> None:
    """Disable an account; its sessions end at once (the id stays: audit trails name it)."""
    call(obj, obj.data_dir(data), "user_disable", user=user_id)
    click.echo(f"disabled {user_id}")


@user.command("reset")
@click.argument("user_id", metavar="USER")
@SECRETS_STDIN
@DATA_OPTION
@click.pass_obj
def user_reset(obj: Context, user_id: str, data: Path | None, *, secrets_stdin: bool) -> None:
    """Set a forgotten password and PIN; the account's sessions end and a lockout lifts.

    With --secrets-stdin: the new password, then the new PIN, one per line.
    """
    secrets = _Secrets(from_stdin=secrets_stdin)
    password, pin = secrets.ask("New password"), secrets.ask("New PIN")
    call(obj, obj.data_dir(data), "user_reset", user=user_id, password=password, pin=pin)
    click.echo(f"reset {user_id}: its sessions have ended")


@user.command("roles")
@click.argument("user_id", metavar="USER")
@_ROLE
@DATA_OPTION
@click.pass_obj
def user_roles(obj: Context, user_id: str, roles: tuple[str, ...], data: Path | None) -> None:
    """Replace an account's roles."""
    call(obj, obj.data_dir(data), "user_roles", user=user_id, roles=list(roles))
    click.echo(f"{user_id}: {', '.join(roles)}")


@user.command("list")
@DATA_OPTION
@JSON_OPTION
@click.pass_obj
def user_list(obj: Context, data: Path | None, *, as_json: bool) -> None:
    """Every account, its roles, and whether it is disabled."""
    users = call(obj, obj.data_dir(data), "users")
    if as_json:
        emit_json(users)
        return
    table = Table()
    for name in ("user", "name", "roles", "disabled"):
        table.add_column(name)
    for u in users:
        table.add_row(u["id"], u["name"], ", ".join(u["roles"]), "yes" if u["disabled"] else "")
    DataConsole().print(table)


# -- the audit trail ----------------------------------------------------------------------


@click.command("reviews")
@click.option("--all", "show_all", is_flag=True, help="Closed reviews too.")
@DATA_OPTION
@JSON_OPTION
@click.pass_obj
def reviews(obj: Context, data: Path | None, *, show_all: bool, as_json: bool) -> None:
    """Break-the-glass accesses awaiting review (privacy officer)."""
    items = call(obj, obj.data_dir(data), "reviews", all=show_all)
    if as_json:
        emit_json(items)
        return
    table = Table(title="Break-the-glass reviews" + ("" if show_all else " (open)"))
    for name in ("review", "opened", "user", "patient", "reason", "note", "outcome"):
        table.add_column(name, overflow="fold")
    for r in items:
        opened = datetime.fromtimestamp(r["opened_at"], UTC).isoformat(timespec="seconds")
        outcome = f"{r['outcome']} by {r['reviewed_by']}" if r.get("reviewed_at") else "open"
        table.add_row(r["id"], opened, r["user"], r["patient"], r["reason"], r["note"], outcome)
    DataConsole().print(table)


@click.command("review")
@click.argument("review_id", metavar="REVIEW")
@click.option("--outcome", required=True, type=click.Choice(["appropriate", "inappropriate"]))
@click.option("--note", default="", help="The privacy officer's finding.")
@DATA_OPTION
@click.pass_obj
def review(obj: Context, review_id: str, outcome: str, note: str, data: Path | None) -> None:
    """Close a break-the-glass review with its outcome."""
    call(obj, obj.data_dir(data), "review_close", review=review_id, outcome=outcome, note=note)
    click.echo(f"review {review_id}: {outcome}")


def _audit_records(obj: Context, data_dir: Path, patient: str | None) -> Iterator[tuple[int, str, str, RecordAccessed]]:
    """Every access event, the archived ones first: the trail outlives the log's retention."""
    try:
        yield from _accesses(whole_history(configured_archive(obj, data_dir), data_dir / "wal", patient=patient))
    except ArchiveError as exc:
        raise click.ClickException(f"the archive cannot be read: {exc}") from None


def _accesses(records: Iterator[LogRecord]) -> Iterator[tuple[int, str, str, RecordAccessed]]:
    for record in records:
        env = record.envelope
        if env.kind is Kind.COMMAND and env.message_type == AUDIT_MESSAGE_TYPE:
            for event in env.events:
                if isinstance(event, RecordAccessed):
                    yield record.lsn, record.recorded_at, env.patient or "", event


@click.command("access")
@click.argument("patient")
@DATA_OPTION
@JSON_OPTION
@click.pass_obj
def access(obj: Context, patient: str, data: Path | None, *, as_json: bool) -> None:
    """Who looked at this patient's record: every access and refusal, from the log (privacy officer)."""
    directory = obj.data_dir(data)
    authorized(obj, directory, Permission.AUDIT_READ, patient=patient, action="audit_read")
    rows = [{"lsn": lsn, **_event_json(event)} for lsn, _at, _patient, event in _audit_records(obj, directory, patient)]
    if as_json:
        for row in rows:
            emit_json(row)
        return
    table = Table(title=f"Access to {patient}")
    for name in ("when", "user", "role", "setting", "device", "what", "outcome", "why"):
        table.add_column(name, overflow="fold")
    for row in rows:
        why = " ".join(x for x in (row["reason"], row["detail"]) if x)
        style = "bold red" if row["severity"] == "high" else ""
        outcome = styled(row["outcome"], style)
        table.add_row(row["at"], row["user"], row["role"], row["setting"], row["device"], row["action"], outcome, why)
    DataConsole().print(table)


def _event_json(event: RecordAccessed) -> dict[str, Any]:
    fields = ("at", "user", "role", "setting", "device", "action", "outcome", "reason", "detail", "severity")
    return {name: getattr(event, name) for name in fields}


def _utc(value: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time", param_hint=option) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@click.command("export")
@click.option("--since", required=True, help="From this time on (ISO 8601, UTC), e.g. 2026-11-01T00:00:00Z.")
@click.option("--until", "until", help="Before this time (ISO 8601, UTC).")
@click.option("--user", "user_id", help="Only what this user did (or was refused).")
@DATA_OPTION
@click.pass_obj
def export(obj: Context, since: str, until: str | None, user_id: str | None, data: Path | None) -> None:
    """The audit trail as FHIR R4 AuditEvent (IHE ATNA), one JSON resource per line (privacy officer)."""
    start = _utc(since, "--since")
    end = _utc(until, "--until") if until else None
    directory = obj.data_dir(data)
    authorized(obj, directory, Permission.AUDIT_READ, action="audit_export")
    node = obj.config.node.id
    for lsn, recorded_at, patient, event in _audit_records(obj, directory, None):
        at = datetime.fromisoformat(event.at)
        if at >= start and (end is None or at < end) and (user_id is None or event.user == user_id):
            emit_json(fhir_audit_event(lsn, recorded_at, patient, event, node=node))


AUDIT_COMMANDS = (reviews, review, access, export)
