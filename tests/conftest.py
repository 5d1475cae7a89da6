"""Shared fixtures: the public sample corpus and hypothesis profiles."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncpg
import pytest
import structlog
from hypothesis import HealthCheck, settings

from tests.harness.pg_server import admin_dsn

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
def _own_session_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's CLI processes keep their session token in the test's own directory, never the user's."""
    monkeypatch.setenv("VIGIL_SESSION_FILE", str(tmp_path / "vigil-session.json"))


@pytest.fixture(autouse=True)
def _no_vigil_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's VIGIL_DATA or VIGIL_CONFIG must not steer a test (or the processes it starts)."""
    monkeypatch.delenv("VIGIL_DATA", raising=False)
    monkeypatch.delenv("VIGIL_CONFIG", raising=False)


@pytest.fixture(autouse=True)
def _fresh_logging() -> object:
    """The CLI configures structlog for its process; a test must not inherit another's setup."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """A superuser DSN: VIGIL_TEST_PG_DSN, else 127.0.0.1:5432 if it answers, else a throwaway server."""
    with admin_dsn() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def pg_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A database of this run's own, dropped at the end."""
    name = f"vigil_test_{os.getpid()}_{secrets.token_hex(4)}"
    asyncio.run(_admin(pg_admin_dsn, f'CREATE DATABASE "{name}"'))
    try:
        yield pg_admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(_admin(pg_admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A schema of this test's own in the run's database, dropped afterwards."""
    name = f"t_{secrets.token_hex(6)}"
    yield name
    asyncio.run(_admin(pg_dsn, f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


@pytest.fixture
def collector() -> Iterator[tuple[str, dict[str, list[bytes]]]]:
    """A loopback OTLP/HTTP collector that keeps every payload it is sent, by path."""
    received: dict[str, list[bytes]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.setdefault(self.path, []).append(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
