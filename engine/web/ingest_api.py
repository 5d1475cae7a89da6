"""HL7 v2 and FHIR in over HTTP: classified into lanes like every other source, answered once durable.

- `POST /hl7v2`: one HL7 v2 message (`x-application/hl7-v2+er7`, HL7's
  media type for it, or `text/plain`); the answer is its ACK, as MLLP would
  send it: 200 with `AA`/`CA`; 400 with `AR`/`CR` and the ERR segment naming
  the fault (the message is in quarantine with its bytes); 503 with
  `Retry-After` and `AE`/`CE` when it is not durable in time (retry).
- `POST /fhir`: a transaction or batch Bundle, or one resource
  (`application/fhir+json`): 201 once durable (200 for one already stored:
  the same LSNs), with `X-Vigil-LSN` and an OperationOutcome saying where it
  went; 400 with an OperationOutcome naming the fault; 503 with `Retry-After`.

The client's scopes decide: HL7 v2 needs `system/*.write`; FHIR a write
scope on every resource type in the body. A body larger than
`[http] body_bytes_max` is refused (413) before it is read whole.

`POST /hl7v2` is served by `hl7v2_asgi`, straight from the app's front door
rather than through Starlette's router and middleware: a sender posting one
result after another pays per message what an MLLP sender pays, plus HTTP's
parsing (the router, its two middlewares and their wrappers were about an
eighth of the node's busy time under 8 posting connections).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, final

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from engine.core.errors import MessageError
from engine.core.model import Kind
from engine.core.outcome import IngestResult, Outcome
from engine.web.answers import internal_error, operation_outcome
from engine.web.gate import Gate, Refused, answer_refusal

__all__ = ["Acknowledge", "IngestApi", "IngestOne"]

# One HL7 v2 message (bytes, source) -> its outcome and its ACK's bytes.
Acknowledge = Callable[[bytes, str], Awaitable[tuple[Outcome, bytes]]]
# One message (bytes, source, kind) -> its result, and the refusal to report (None when accepted).
IngestOne = Callable[[bytes, str, Kind], Awaitable[tuple[IngestResult, MessageError | None]]]

HL7_MEDIA: Final = "x-application/hl7-v2+er7"
_HL7_ACCEPTED: Final = frozenset({HL7_MEDIA, "application/hl7-v2", "text/plain", "application/edi-hl7"})
_FHIR_ACCEPTED: Final = frozenset({"application/fhir+json", "application/json"})
_STATUS: Final = {Outcome.ACCEPTED: 200, Outcome.REJECTED: 400, Outcome.RETRY: 503}


class _Typed(msgspec.Struct):
    resourceType: str = ""  # noqa: N815 -- FHIR's own name


class _Entry(msgspec.Struct):
    resource: _Typed | None = None


class _Peek(msgspec.Struct):
    """Just enough of a FHIR body to know which types it writes (the full decode is intake's)."""

    resourceType: str = ""  # noqa: N815 -- FHIR's own name
    entry: list[_Entry] = msgspec.field(default_factory=list)


class _TooLargeError(Exception):
    pass


@final
class IngestApi:
    def __init__(self, acknowledge: Acknowledge, ingest: IngestOne, gate: Gate, *, body_bytes_max: int) -> None:
        self._acknowledge = acknowledge
        self._ingest = ingest
        self._gate = gate
        self._limit = body_bytes_max

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/hl7v2", self._hl7v2, methods=["POST"]),
            Route("/fhir", self._fhir, methods=["POST"]),
        ]

    async def hl7v2_asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`POST /hl7v2` as a whole ASGI app: its answer, its refusals, and a 500 for a fault of ours."""
        request = Request(scope, receive)
        try:
            response = await self._hl7v2(request)
        except Refused as refused:
            response = await answer_refusal(request, refused)
        except Exception:
            await internal_error()(scope, receive, send)
            raise  # to the server's error log (the text may quote the message): not into the answer
        await response(scope, receive, send)

    async def _hl7v2(self, request: Request) -> Response:
        client = await self._gate.allow(request, "*", "write", action="hl7v2_in")
        _media_type(request, _HL7_ACCEPTED)
        raw = await self._body(request)
        if not raw.strip():
            return operation_outcome(400, "the body holds no HL7 v2 message")
        outcome, ack = await self._acknowledge(raw, f"http:{client.id}")
        headers = {"Retry-After": "1"} if outcome is Outcome.RETRY else None
        return Response(ack, status_code=_STATUS[outcome], media_type=HL7_MEDIA, headers=headers)

    async def _fhir(self, request: Request) -> Response:
        _media_type(request, _FHIR_ACCEPTED)
        raw = await self._body(request)
        client = None
        for rtype in _types_in(raw):
            client = await self._gate.allow(request, rtype, "write", action="fhir_in")
        assert client is not None  # `types` is never empty
        result, refusal = await self._ingest(raw, f"http:{client.id}", Kind.FHIR)
        if result.outcome is Outcome.ACCEPTED:
            lsns = ",".join(str(n) for n in result.lsns)
            said = "already stored" if result.duplicate else "stored"
            return operation_outcome(
                200 if result.duplicate else 201,
                f"{said} durably at LSN {lsns}",
                severity="information",
                headers={"X-Vigil-LSN": lsns},
            )
        reason = refusal.reason if refusal is not None else "not stored"
        if result.outcome is Outcome.RETRY:
            return operation_outcome(503, f"not stored, retry: {reason}", headers={"Retry-After": "1"})
        return operation_outcome(400, f"refused (kept in quarantine): {reason}")

    async def _body(self, request: Request) -> bytes:
        """The body, refused as soon as it is known to pass the limit (from its length, or as it streams)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._limit:
            raise Refused(_too_large(self._limit))
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self._limit:
                    raise Refused(_too_large(self._limit))
                chunks.append(chunk)
        except ClientDisconnect:
            raise Refused(operation_outcome(400, "the client went before the body was sent")) from None
        return b"".join(chunks)


def _too_large(limit: int) -> Response:
    return operation_outcome(413, f"the body is larger than {limit:,} bytes ([http] body_bytes_max): not stored")


def _media_type(request: Request, accepted: frozenset[str]) -> None:
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media not in accepted:
        raise Refused(operation_outcome(415, f"send the body as one of: {', '.join(sorted(accepted))}"))


def _types_in(raw: bytes) -> list[str]:
    """The resource types a FHIR body writes; `*` (every type) when it cannot be read (intake says why)."""
    try:
        peek = msgspec.json.decode(raw, type=_Peek)
    except msgspec.DecodeError:
        return ["*"]
    if peek.resourceType != "Bundle":
        return [peek.resourceType or "*"]
    types = sorted({e.resource.resourceType or "*" for e in peek.entry if e.resource is not None})
    return types or ["*"]
