"""An HTTP server as a destination: a FHIR R4 REST server, or HL7 v2 over HTTP.

FHIR: a Bundle is POSTed to the base URL (a transaction or batch is what a
FHIR server takes there); a single resource is PUT at `Type/id` when it has
an id, else POSTed to `Type`. HL7 v2: the message is POSTed to the URL as
`x-application/hl7-v2+er7` (HL7's "HL7 over HTTP"); an HL7 ACK in the answer
decides as over MLLP.

What the answer means:
- 2xx: delivered (an ACK in the body still decides for HL7 v2);
- 408, 425, 429, 5xx, a timeout: sent again after the route's back-off;
- any other 4xx, or a redirect: refused (sending it again will not help),
  with the server's OperationOutcome (or the start of its answer) for the operator;
- no connection: unreachable, retried as soon as one can be made.

Each request carries `traceparent` (W3C) when tracing is on, so the
receiver's spans join the delivery's.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Final, final

import httpx
import msgspec
from opentelemetry import propagate

from engine.core.errors import HeaderError
from engine.core.hl7 import read_header
from engine.routes.outcome import Attempt, Verdict, read_answer
from engine.routes.payload import Payload
from engine.routes.selection import Candidate

__all__ = ["HttpDestination", "read_http_answer"]

_FHIR_JSON: Final = "application/fhir+json"
_HL7_V2: Final = "x-application/hl7-v2+er7"
_ANSWER_CHARS: Final = 400
_RETRYABLE: Final = frozenset({408, 425, 429})


class _Head(msgspec.Struct):
    resourceType: str | None = None  # noqa: N815 -- the FHIR element's name
    id: str | None = None


class _Issue(msgspec.Struct):
    severity: str = ""
    code: str = ""
    diagnostics: str = ""
    details: dict[str, object] = {}


class _Outcome(msgspec.Struct):
    resourceType: str = ""  # noqa: N815 -- the FHIR element's name
    issue: list[_Issue] = []


_HEAD: Final = msgspec.json.Decoder(_Head)
_OUTCOME: Final = msgspec.json.Decoder(_Outcome)


@final
class HttpDestination:
    """One HTTP client per route (its connections pooled up to the route's `connections`)."""

    def __init__(
        self,
        url: str,
        *,
        connections: int,
        tls: ssl.SSLContext | None,
        token: str,
        connect_timeout_s: float,
        ack_timeout_s: float,
    ) -> None:
        self._url = url.rstrip("/")
        headers = {"User-Agent": "vigil"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.AsyncClient(
            headers=headers,
            verify=tls if tls is not None else True,
            timeout=httpx.Timeout(ack_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            follow_redirects=False,  # a POST that is redirected is a wrong URL, not something to follow
        )

    async def send(self, candidate: Candidate, payload: Payload) -> Attempt:
        method, url, media = self._request(payload)
        headers = {"Content-Type": media, "Accept": _FHIR_JSON if payload.fhir else f"{_HL7_V2}, */*"}
        propagate.inject(headers)  # the current span's traceparent, when tracing is on
        headers["X-Vigil-Lane"] = candidate.lane.value
        try:
            response = await self._client.request(method, url, content=payload.body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return Attempt(Verdict.UNREACHABLE, "connect", type(exc).__name__)
        except httpx.TimeoutException:
            return Attempt(Verdict.RETRY, "timeout", "no answer in time", maybe_received=True)
        except httpx.TransportError as exc:
            return Attempt(Verdict.UNREACHABLE, "broken", type(exc).__name__, maybe_received=True)
        control_id = b""
        if not payload.fhir:
            try:
                control_id = read_header(payload.body).get(10)
            except HeaderError:
                control_id = b""
        return read_http_answer(response.status_code, response.headers, response.content, control_id)

    async def close(self) -> None:
        await self._client.aclose()

    def _request(self, payload: Payload) -> tuple[str, str, str]:
        if not payload.fhir:
            return "POST", self._url, _HL7_V2
        try:
            head = _HEAD.decode(payload.body)
        except msgspec.DecodeError:
            head = _Head()
        rtype = head.resourceType or ""
        if rtype == "Bundle" or not rtype.isalpha():
            return "POST", self._url, _FHIR_JSON
        if head.id:
            return "PUT", f"{self._url}/{rtype}/{head.id}", _FHIR_JSON
        return "POST", f"{self._url}/{rtype}", _FHIR_JSON


def read_http_answer(status: int, headers: Mapping[str, str], body: bytes, control_id: bytes) -> Attempt:
    """What an HTTP answer means for the message (see the module's docstring)."""
    code = str(status)
    if 200 <= status < 300:
        if control_id and body.lstrip().startswith(b"MSH"):
            return read_answer(body.strip(), control_id)
        return Attempt(Verdict.DELIVERED, code)
    text = _answer_text(headers.get("content-type", ""), body)
    if status in _RETRYABLE or status >= 500:
        return Attempt(Verdict.RETRY, code, text, maybe_received=status >= 500)
    if 300 <= status < 400:
        where = headers.get("location", "")
        return Attempt(Verdict.REFUSED, code, f"redirected{' to ' + where if where else ''}: check the route's URL")
    return Attempt(Verdict.REFUSED, code, text)


def _answer_text(content_type: str, body: bytes) -> str:
    """The server's reason: an OperationOutcome's issues, else the start of its answer as text."""
    if "json" in content_type:
        try:
            outcome = _OUTCOME.decode(body)
        except msgspec.DecodeError:
            outcome = _Outcome()
        if outcome.resourceType == "OperationOutcome" and outcome.issue:
            parts = []
            for issue in outcome.issue:
                text = issue.details.get("text")
                details = text if isinstance(text, str) else ""
                parts.append(f"{issue.severity} {issue.code}: {issue.diagnostics or details}".strip())
            return " | ".join(parts)[:_ANSWER_CHARS]
    return body[:_ANSWER_CHARS].decode("utf-8", errors="replace").strip()
