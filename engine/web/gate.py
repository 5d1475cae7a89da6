"""Who may call the HTTP API: a bearer token of a registered client, whose scopes allow the request.

The gate is handed the node's `authorize_client` (`engine.auth`); it reads
the `Authorization` header and turns a refusal into the HTTP answer FHIR
expects: 401 with `WWW-Authenticate` for a missing, unknown or revoked
token, 403 for a scope that does not allow the request, 503 when the audit
trail cannot be written (nothing is served unaudited).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Protocol, final

from starlette.requests import Request
from starlette.responses import Response

from engine.auth import AccessRefusedError, ApiClient, Mode, ScopeRefusedError
from engine.infra.admin_socket import AdminError
from engine.web.answers import operation_outcome

__all__ = ["AuthorizeClient", "Gate", "Refused", "answer_refusal"]


class AuthorizeClient(Protocol):
    def __call__(
        self, token: str, resource_type: str, mode: Mode, *, patients: Sequence[str] = (), action: str
    ) -> Awaitable[ApiClient]: ...


class Refused(Exception):  # noqa: N818 -- it carries the answer, as Starlette's HTTPException does
    """A request the gate refused, with the answer to send."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


async def answer_refusal(request: Request, exc: Exception) -> Response:
    """The app's exception handler for `Refused`: its own answer.

    A refused upload's body may be unread (refused before it was read, or
    cut at the size limit): the connection is closed after the answer, or the
    client's next request on it would be read from the middle of this body.
    """
    assert isinstance(exc, Refused)
    if request.method != "GET":
        exc.response.headers["Connection"] = "close"
    return exc.response


@final
class Gate:
    def __init__(self, authorize: AuthorizeClient) -> None:
        self._authorize = authorize

    async def allow(
        self, request: Request, resource_type: str, mode: Mode, *, patients: Sequence[str] = (), action: str
    ) -> ApiClient:
        """The calling client, if it may; raises `Refused` with the answer otherwise."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        try:
            return await self._authorize(token, resource_type, mode, patients=patients, action=action)
        except ScopeRefusedError as refused:
            raise Refused(operation_outcome(403, refused.reason)) from None
        except AccessRefusedError as refused:
            challenge = {"WWW-Authenticate": 'Bearer realm="vigil"'}
            raise Refused(operation_outcome(401, refused.reason, headers=challenge)) from None
        except AdminError as exc:
            raise Refused(operation_outcome(503, str(exc), headers={"Retry-After": "1"})) from None
