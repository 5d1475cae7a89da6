"""Every package's public names exist and are importable from the package."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "engine.core.hl7",
    "engine.core.fhir",
    "engine.wal",
    "actors",
    "lanes",
    "engine.core.model",
    "engine.core.errors",
    "engine.core.mllp",
    "engine.core.decode",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist(name: str) -> None:
    """`__all__` lists only names the module really has."""
    module = importlib.import_module(name)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing
