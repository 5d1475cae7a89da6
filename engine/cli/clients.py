"""`vigil client add|list|revoke`: the systems allowed to call the HTTP API, with their scopes.

An administrator's session is needed (`user.manage`); each change is audited.
A client's token is shown once, when it is added: only its SHA-256 is kept.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
from rich.table import Table

from engine.auth import SCOPE_RULE
from engine.cli.console import DataConsole
from engine.cli.context import DATA_OPTION, JSON_OPTION, Context, emit_json
from engine.cli.session import call

__all__ = ["client"]


@click.group()
def client() -> None:
    """API clients: systems calling the HTTP API (FHIR, HL7 v2 over HTTP) with a bearer token."""


@client.command("add")
@click.argument("client_id", metavar="CLIENT")
@click.option("--scope", "scopes", multiple=True, required=True, help=f"A scope, repeatable: {SCOPE_RULE}.")
@DATA_OPTION
@click.pass_obj
def client_add(obj: Context, client_id: str, scopes: tuple[str, ...], data: Path | None) -> None:
    """Register a client; its bearer token is printed once, on standard output alone."""
    reply = call(obj, obj.data_dir(data), "client_add", client=client_id, scopes=list(scopes))
    click.echo(f"added client {client_id}: {' '.join(scopes)}", err=True)
    click.echo("its token (shown once; keep it as a secret):", err=True)
    click.echo(reply["token"])


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
    """Every client, its scopes, and whether it is revoked."""
    clients = call(obj, obj.data_dir(data), "clients")
    if as_json:
        emit_json(clients)
        return
    table = Table()
    for name in ("client", "scopes", "added", "by", "revoked"):
        table.add_column(name)
    for c in clients:
        revoked = _day(c["revoked_at"]) if c["revoked_at"] else ""
        table.add_row(c["client"], " ".join(c["scopes"]), _day(c["created_at"]), c["created_by"], revoked)
    DataConsole().print(table)


def _day(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")
