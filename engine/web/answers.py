"""FHIR's way of answering over HTTP: `application/fhir+json` bodies, and `OperationOutcome` for every fault.

Text that came from a message or a request (a reason quoting a field, a
parameter's value) is data: it goes in a JSON string, never into markup or a
header.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec
from starlette.responses import Response

from engine.core.fhir import Json

__all__ = ["FHIR_JSON", "fhir_json", "internal_error", "operation_outcome"]

FHIR_JSON: Final = "application/fhir+json"
_ENCODER: Final = msgspec.json.Encoder()
# HTTP status -> the OperationOutcome issue code that says the same (FHIR's issue-type value set).
_ISSUE_CODE: Final = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    413: "too-costly",
    415: "not-supported",
    422: "processing",
    500: "exception",
    503: "transient",
}


def fhir_json(body: Json, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A FHIR resource as the response."""
    return Response(_ENCODER.encode(body), status_code=status, media_type=FHIR_JSON, headers=dict(headers or {}))


def operation_outcome(
    status: int, text: str, *, severity: str = "error", headers: Mapping[str, str] | None = None
) -> Response:
    """One issue, with the HTTP status it goes with (`severity` information for a success that explains itself)."""
    code = "informational" if severity == "information" else _ISSUE_CODE.get(status, "processing")
    body: Json = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    }
    return fhir_json(body, status, headers)


def internal_error() -> Response:
    """A fault of ours: said without its exception, whose text may quote a message (that goes to the error log)."""
    return operation_outcome(500, "internal error: the request was not completed (see the node's log)")
