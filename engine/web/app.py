"""The node's HTTP face as one ASGI app: probes and metrics, FHIR reads, HL7 v2 and FHIR in, the web console.

Every answer says `Cache-Control: no-store` (a FHIR answer may hold PHI, and
no proxy or browser cache may keep it), except the console's content-hashed
assets, which say they may be kept; and every one says
`X-Content-Type-Options: nosniff`.
"""

from __future__ import annotations

from typing import Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.web.answers import internal_error, operation_outcome
from engine.web.console_api import ConsoleApi
from engine.web.fhir_api import READ_FAULTS, FhirReads
from engine.web.gate import Refused, answer_refusal
from engine.web.ingest_api import IngestApi
from engine.web.probes import Probes

__all__ = ["web_app"]

_NO_STORE: Final = (b"cache-control", b"no-store")
_NOSNIFF: Final = (b"x-content-type-options", b"nosniff")


def web_app(probes: Probes, reads: FhirReads, ingest: IngestApi, console: ConsoleApi) -> ASGIApp:
    app = Starlette(
        routes=[*probes.routes(), *ingest.routes(), *reads.routes(), *console.routes()],
        exception_handlers={**READ_FAULTS, Refused: answer_refusal, HTTPException: _http_fault, 500: _internal},
    )
    return _NoStore(_Front(app, ingest))


async def _http_fault(_request: Request, exc: Exception) -> Response:
    """No such path (404), or not that method (405): an OperationOutcome, as every other fault."""
    assert isinstance(exc, HTTPException)
    return operation_outcome(exc.status_code, exc.detail, headers=exc.headers)


async def _internal(_request: Request, _exc: Exception) -> Response:
    return internal_error()


class _Front:
    """The front door: `POST /hl7v2` goes straight to its handler, everything else to Starlette's router."""

    def __init__(self, app: ASGIApp, ingest: IngestApi) -> None:
        self._app = app
        self._hl7v2 = ingest.hl7v2_asgi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/hl7v2" and scope["method"] == "POST":
            await self._hl7v2(scope, receive, send)
        else:
            await self._app(scope, receive, send)


class _NoStore:
    """Adds the headers every answer carries (a pure ASGI wrapper: no per-request task, unlike Starlette's)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                # An answer that says how it may be cached (the console's hashed assets) keeps that.
                cached = any(name.lower() == b"cache-control" for name, _ in headers)
                message["headers"] = [*headers, _NOSNIFF] if cached else [*headers, _NO_STORE, _NOSNIFF]
            await send(message)

        await self._app(scope, receive, sending)
