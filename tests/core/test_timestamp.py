"""HL7 DTM to ISO 8601, keeping precision."""

from __future__ import annotations

import pytest

from engine.core.hl7 import to_iso


@pytest.mark.parametrize(
    ("dtm", "iso"),
    [
        ("2026", "2026"),
        ("202611", "2026-11"),
        ("20261124", "2026-11-24"),
        ("2026112410", "2026-11-24T10"),
        ("202611241015", "2026-11-24T10:15"),
        ("20261124101503", "2026-11-24T10:15:03"),
        ("20261124101503.12", "2026-11-24T10:15:03.12"),
        ("20261124101503+0100", "2026-11-24T10:15:03+01:00"),
        ("202611241015-0500", "2026-11-24T10:15-05:00"),
        ("20261324", None),
        ("2026112425", None),
        ("20261", None),
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_to_iso(dtm: str | None, iso: str | None) -> None:
    """Valid DTMs keep their precision; invalid ones give None, never an exception."""
    assert iso == to_iso(dtm)
