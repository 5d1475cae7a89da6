"""Shared fixtures: the public sample corpus and hypothesis profiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import structlog
from hypothesis import HealthCheck, settings

# ../shared/corpus beside the repository: real public HL7 v2 and FHIR samples
# (MIT, microsoft/FHIR-Converter). Read in place, never copied here.
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def corpus_files(kind: str) -> list[Path]:
    """The corpus files of one kind (`hl7v2`, `fhir`), or [] where the corpus is absent."""
    folder = CORPUS / kind
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every anyio test runs on both backends."""
    return str(request.param)


@pytest.fixture
def corpus_dir() -> Path:
    """The corpus folder; skips the test with the reason where it is absent."""
    if not CORPUS.is_dir():
        pytest.skip(f"public sample corpus not found at {CORPUS} (../shared/corpus beside the repository)")
    return CORPUS


@pytest.fixture(autouse=True)
def _fresh_logging() -> object:
    """The CLI configures structlog for its process; a test must not inherit another's setup."""
    yield
    structlog.reset_defaults()
