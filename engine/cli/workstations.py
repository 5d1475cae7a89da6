"""`vigil workstation register|list|forget`: each device's clinical setting, which its sessions take.

An idle session locks after its setting's timeout; the setting is the
hospital's to say for each device, not the user's at sign-in. A browser
shows its device id on the console's sign-in page; a CLI host's device is
its `[workstation] device` (else its host name). An administrator's session
is needed (`user.manage`); each change is audited.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
from rich.table import Table

from engine.auth import Setting
from engine.cli.console import DataConsole, styled
from engine.cli.context import DATA_OPTION, JSON_OPTION, Context, emit_json
from engine.cli.session import call

__all__ = ["workstation"]

_SETTINGS = [s.value for s in Setting]


@click.group()
def workstation() -> None:
    """Workstations: the clinical setting each device's sessions take (how soon they lock when idle)."""


@workstation.command("register")
@click.argument("device")
@click.option("--setting", type=click.Choice(_SETTINGS), required=True, help="Where the device is.")
@click.option("--name", default="", help="What people call it (ED bay 3).")
@DATA_OPTION
@click.pass_obj
def workstation_register(obj: Context, device: str, setting: str, name: str, data: Path | None) -> None:
    """Bind DEVICE to its setting (registering it again replaces the setting); sign-ins there take it."""
    call(obj, obj.data_dir(data), "workstation_register", device=device, setting=setting, name=name)
    DataConsole(soft_wrap=True).print(styled(f"registered {device}: {setting}"))


@workstation.command("forget")
@click.argument("device")
@DATA_OPTION
@click.pass_obj
def workstation_forget(obj: Context, device: str, data: Path | None) -> None:
    """Forget DEVICE: its browsers' sessions take [auth] unregistered_setting again."""
    call(obj, obj.data_dir(data), "workstation_forget", device=device)
    DataConsole(soft_wrap=True).print(styled(f"forgot {device}"))


@workstation.command("list")
@DATA_OPTION
@JSON_OPTION
@click.pass_obj
def workstation_list(obj: Context, data: Path | None, *, as_json: bool) -> None:
    """Every registered device, its setting and who registered it."""
    stations = call(obj, obj.data_dir(data), "workstations")
    if as_json:
        emit_json(stations)
        return
    table = Table()
    for column in ("device", "name", "setting", "registered", "by"):
        table.add_column(column)
    for s in stations:
        when = datetime.fromtimestamp(s["registered_at"], UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(styled(s["device"]), styled(s["name"]), s["setting"], when, styled(s["registered_by"]))
    DataConsole().print(table)
