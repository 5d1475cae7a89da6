"""`vigil client add|list|rotate|revoke`: the systems allowed to call the HTTP API, with their scopes.

An administrator's session is needed (`user.manage`); each change is audited.
A client's token is shown once, when it is added or rotated: only its SHA-256
is kept. A token lasts `--days` (90 unless said, at most 730), then is refused
until it is rotated.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
from rich.table import Table

from engine.auth import SCOPE_RULE, TOKEN_DAYS_DEFAULT, TOKEN_DAYS_MAX
from engine.cli.console import DataConsole
from engine.cli.context import DATA_OPTION, JSON_OPTION, Context, emit_json
from engine.cli.session import call

__all__ = ["client"]


_DAYS = click.option(
    "--days",
    type=click.IntRange(1, TOKEN_DAYS_MAX),
    default=TOKEN_DAYS_DEFAULT,
    show_default=True,
    help="How long the token lasts.",
)


@click.group()
def client() -> None:
    """API clients: systems calling the HTTP API (FHIR, HL7 v2 over HTTP) with a bearer token."""


@client.command("add")
@click.argument("client_id", metavar="CLIENT")
@click.option("--scope", "scopes", multiple=True, required=True, help=f"A scope, repeatable: {SCOPE_RULE}.")
@_DAYS
@DATA_OPTION
@click.pass_obj
def client_add(obj: Context, client_id: str, scopes: tuple[str, ...], days: int, data: Path | None) -> None:
    """Register a client; its bearer token is printed once, on standard output alone."""
    reply = call(obj, obj.data_dir(data), "client_add", client=client_id, scopes=list(scopes), days=days)
    click.echo(f"added client {client_id}: {' '.join(scopes)}", err=True)
    _token(reply["token"], days)


@client.command("rotate")
@click.argument("client_id", metavar="CLIENT")
@_DAYS
@DATA_OPTION
@click.pass_obj
def client_rotate(obj: Context, client_id: str, days: int, data: Path | None) -> None:
    """A new token for a client (printed once); its old token is refused from now on."""
    reply = call(obj, obj.data_dir(data), "client_rotate", client=client_id, days=days)
    click.echo(f"new token for client {client_id}; the old one no longer works", err=True)
    _token(reply["token"], days)


def _token(token: str, days: int) -> None:
    click.echo(f"its token (shown once; keep it as a secret; it lasts {days} days):", err=True)
    click.echo(token)


@client.command("revoke")
@click.argument("client_id", metavar="CLIENT")
@DATA_OPTION
@click.pass_obj
def client_revoke(obj: Context, client_id: str, data: Path | None) -> None:
    """Revoke a client's token at once (the client stays listed: audit trails name it)."""
    call(obj, obj.data_dir(data), "client_revoke", client=client_id)
    click.echo(f"revoked client {client_id}")


@client.command("list")
@DATA_OPTION
@JSON_OPTION
@click.pass_obj
def client_list(obj: Context, data: Path | None, *, as_json: bool) -> None:
    """Every client, its scopes, when its token expires, and whether it is revoked."""
    clients = call(obj, obj.data_dir(data), "clients")
    if as_json:
        emit_json(clients)
        return
    table = Table()
    for name in ("client", "scopes", "added", "by", "expires", "revoked"):
        table.add_column(name)
    for c in clients:
        revoked = _day(c["revoked_at"]) if c["revoked_at"] else ""
        expires = _day(c["expires_at"]) if c.get("expires_at") else "never (added before tokens expired)"
        table.add_row(c["client"], " ".join(c["scopes"]), _day(c["created_at"]), c["created_by"], expires, revoked)
    DataConsole().print(table)


def _day(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")
