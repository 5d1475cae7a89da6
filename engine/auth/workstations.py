"""Registered workstations: a device's clinical setting is the hospital's to say, not the user's. Pure.

An idle session locks after its setting's timeout (five minutes in the
emergency department, fifteen in an office). Were the setting chosen at
sign-in, anyone could pick the longest. An administrator registers each
device (a browser's device id, a CLI host's name) with its setting; a
sign-in from a registered device takes that setting whatever it asks for,
and a browser on a device nobody registered takes `[auth]
unregistered_setting` (by default the strictest).
"""

from __future__ import annotations

import re
from typing import Final, final

import msgspec

from engine.auth.settings import Setting

__all__ = ["Workstation", "device_problem"]

_DEVICE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


@final
class Workstation(msgspec.Struct, frozen=True):
    device: str
    setting: Setting
    name: str
    registered_at: float
    registered_by: str


def device_problem(device: str) -> str | None:
    """Why `device` cannot name a workstation, or None."""
    if _DEVICE.fullmatch(device) is None:
        return f"{device!r} cannot name a device: 1-128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit"
    return None
