"""HL7 v2 timestamps (DTM/TS) to ISO 8601, keeping the precision the sender gave."""

from __future__ import annotations

import re

__all__ = ["to_iso"]

_DTM = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?")
_LIMITS = ((1, 12), (1, 31), (0, 23), (0, 59), (0, 59))


def to_iso(value: str | None) -> str | None:
    """`20261124101503.12+0100` -> `2026-11-24T10:15:03.12+01:00`; None if not a DTM.

    Precision is kept: `202611` becomes `2026-11`, `2026112410` `2026-11-24T10`.
    A value that is not a valid date (month 13, letters) gives None: the caller
    still has the original bytes, and a bad timestamp must not reject a result.
    """
    if not value:
        return None
    m = _DTM.fullmatch(value.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    parts = (month, day, hour, minute, second)
    for part, (low, high) in zip(parts, _LIMITS, strict=True):
        if part is not None and not low <= int(part) <= high:
            return None
    out = year
    if month:
        out += f"-{month}"
    if day:
        out += f"-{day}"
    if hour:
        out += f"T{hour}"
    if minute:
        out += f":{minute}"
    if second:
        out += f":{second}"
        if fraction:
            out += f".{fraction}"
    if zone and hour:
        out += f"{zone[:3]}:{zone[3:]}"
    return out
