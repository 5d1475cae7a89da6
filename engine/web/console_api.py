"""The web console's door: browser sessions over the same requests, policy and audit as the CLI.

A browser signs in with user, password and the workstation's clinical
setting; the session token goes into a cookie the page's script cannot read
(`HttpOnly`, `SameSite=Strict`, `Secure` over HTTPS, scoped to the API's
path), and the session is bound to the browser's own device id (another
such cookie). Every other call is `POST /console/api/{operation}` with a JSON
body: one of the admin socket's requests, answered by the same handler the
CLI reaches, so the session's idle lock by setting, break-the-glass and the
PHI audit are the same ones. Cross-site requests are refused three ways: the
cookie is never sent cross-site, a call must carry the session's CSRF token
(an HMAC of the session token, read with `GET /console/api/session`), and a
foreign `Origin` is refused. Logins are limited per client address, on top
of the account lockout after failed passwords.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final, final
from urllib.parse import urlsplit

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.infra.admin_socket import AdminError

__all__ = ["CONSOLE_OPERATIONS", "ConsoleApi", "Handle", "LoginLimiter"]

# One admin request by name, answered as the admin socket would (`Node.handle`).
Handle = Callable[[str, dict[str, object]], Awaitable[object]]

# What a browser may ask: the console's views and actions; never account management or exports.
CONSOLE_OPERATIONS: Final = frozenset(
    {
        "whoami",
        "lock",
        "unlock",
        "logout",
        "break_glass",
        "status",
        "patient",
        "acknowledge",
        "quarantine_list",
        "quarantine_act",
        "routes",
        "worklist",
        "reviews",
        "review_close",
        "record_accesses",
    }
)
STATIC: Final = Path(__file__).with_name("console")
_SESSION: Final = "vigil_session"
_DEVICE: Final = "vigil_device"
_API: Final = "/console/api"
_UNREAD: Final = {"Connection": "close"}  # a refusal that left the body unread ends the connection
_ENCODER: Final = msgspec.json.Encoder()
# Screens poll status every two seconds: they take a count up to 1 s old, so fifty screens cost the node few counts.
_POLLED_STATUS_AGE_S: Final = 1.0
# The console's page runs only its own script and style: text from a message can never become code.
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@final
class LoginLimiter:
    """At most `attempts` logins per `window_s` from one address (a password-guessing script slows to a crawl)."""

    def __init__(self, attempts: int, window_s: float, clock: Callable[[], float]) -> None:
        self._attempts = attempts
        self._window_s = window_s
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}

    def retry_after(self, address: str) -> float | None:
        """None when this login may go ahead (and counts it), else the seconds until one may."""
        now = self._clock()
        times = self._seen.setdefault(address, deque())
        while times and times[0] <= now - self._window_s:
            times.popleft()
        if len(times) >= self._attempts:
            return times[0] + self._window_s - now
        times.append(now)
        if len(self._seen) > 10_000:  # forget quiet addresses: memory stays bounded under a scan
            self._seen = {a: t for a, t in self._seen.items() if t and t[-1] > now - self._window_s}
        return None


@final
class ConsoleApi:
    def __init__(
        self,
        handle: Handle,
        limiter: LoginLimiter,
        *,
        secure: bool,
        break_glass_reasons: tuple[str, ...],
        csrf_key: bytes | None = None,
    ) -> None:
        self._handle = handle
        self._reasons = list(break_glass_reasons)
        self._limiter = limiter
        self._secure = secure
        self._csrf_key = csrf_key or secrets.token_bytes(32)  # per process: a restart asks pages to read it again
        self._assets = _Assets.read(STATIC)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/console", self._page, methods=["GET"]),
            Route("/console/", self._page, methods=["GET"]),
            Route("/console/static/{name}", self._asset, methods=["GET"]),
            Route(f"{_API}/session", self._session, methods=["GET"]),
            Route(f"{_API}/login", self._login, methods=["POST"]),
            Route(f"{_API}/{{operation}}", self._call, methods=["POST"]),
        ]

    async def _page(self, _request: Request) -> Response:
        return Response(self._assets.page, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    async def _asset(self, request: Request) -> Response:
        """A script or style sheet by its content-hashed name: cached for a year (a new release has new names)."""
        found = self._assets.by_name.get(request.path_params["name"])
        if found is None:
            return _json({"error": "no such file"}, 404)
        body, media = found
        return Response(body, media_type=media, headers={"Cache-Control": "public, max-age=31536000, immutable"})

    async def _session(self, request: Request) -> Response:
        """The session's state and its CSRF token (a cross-site page cannot read this answer), and the device's
        workstation: the setting a sign-in here gets, which the administrator registered, never the user's pick."""
        device = request.cookies.get(_DEVICE) or _new_device()
        station = _as_dict(await self._handle("workstation_of", {"device": device}))
        token = request.cookies.get(_SESSION, "")
        answer: dict[str, object] = {"state": "none", "workstation": station, "break_glass_reasons": self._reasons}
        if token:
            try:
                who = await self._handle("whoami", self._with_auth(request, {}))
            except AdminError as exc:
                answer["why"] = str(exc)
            else:
                answer = {**answer, **_as_dict(who), "csrf": self._csrf(token)}
        response = _json(answer)
        if not request.cookies.get(_DEVICE):
            secure = self._secure or request.url.scheme == "https"
            self._set_cookie(response, _DEVICE, device, path=_API, max_age=365 * 24 * 3600, secure=secure)
        return response

    async def _login(self, request: Request) -> Response:
        refused = _foreign(request)
        if refused is not None:
            return refused
        address = request.client.host if request.client else ""
        wait = self._limiter.retry_after(address)
        if wait is not None:
            return _json(
                {"error": "too many logins from this address: wait"},
                429,
                {"Retry-After": str(int(wait) + 1), **_UNREAD},
            )
        body = await _body(request)
        device = request.cookies.get(_DEVICE) or _new_device()
        fields = {k: body.get(k) for k in ("user", "password")}  # the setting is the workstation's, not the user's
        try:
            answer = _as_dict(await self._handle("login", {**fields, "device": device}))
        except AdminError as exc:
            return _json({"error": str(exc)}, 401)
        token = str(answer.pop("token"))  # the page never sees it: only the cookie carries it
        response = _json({**answer, "csrf": self._csrf(token)})
        # Secure over HTTPS, the node's own or a proxy's (uvicorn reads X-Forwarded-Proto from a loopback proxy).
        secure = self._secure or request.url.scheme == "https"
        self._set_cookie(response, _SESSION, token, path=_API, max_age=None, secure=secure)
        self._set_cookie(response, _DEVICE, device, path=_API, max_age=365 * 24 * 3600, secure=secure)
        return response

    async def _call(self, request: Request) -> Response:
        operation = request.path_params["operation"]
        if operation not in CONSOLE_OPERATIONS:
            return _json({"error": f"the console does not offer {operation!r}"}, 404)
        refused = _foreign(request)
        if refused is not None:
            return refused
        token = request.cookies.get(_SESSION, "")
        sent = request.headers.get("x-vigil-csrf", "")
        if not token or not hmac.compare_digest(sent, self._csrf(token)):
            why = "sign in again (no session, or the page's token does not match it)"
            return _json({"error": why}, 403, _UNREAD)
        body = await _body(request)
        if operation == "status":
            body = {**body, "max_age_s": _POLLED_STATUS_AGE_S}
        try:
            answer = await self._handle(operation, self._with_auth(request, body))
        except AdminError as exc:
            return _json({"error": str(exc)}, 403)
        response = _json(answer)
        if operation == "logout":
            response.delete_cookie(_SESSION, path=_API)
        return response

    def _with_auth(self, request: Request, body: Mapping[str, Any]) -> dict[str, object]:
        auth = {"token": request.cookies.get(_SESSION, ""), "device": request.cookies.get(_DEVICE, "")}
        return {**{k: v for k, v in body.items() if k != "auth"}, "auth": auth}

    def _csrf(self, token: str) -> str:
        return hmac.new(self._csrf_key, token.encode(), hashlib.sha256).hexdigest()[:40]

    @staticmethod
    def _set_cookie(response: Response, name: str, value: str, *, path: str, max_age: int | None, secure: bool) -> None:
        response.set_cookie(name, value, max_age=max_age, path=path, secure=secure, httponly=True, samesite="strict")


@final
class _Assets:
    """The page, its script and its style, read once; each asset named by its content's hash.

    The page names `console.js` as `console.<hash>.js`: a browser or a CDN in
    front may keep an asset for a year, and a new release is fetched anew.
    """

    _MEDIA: Final = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}

    def __init__(self, page: bytes, by_name: dict[str, tuple[bytes, str]]) -> None:
        self.page = page
        self.by_name = by_name

    @classmethod
    def read(cls, folder: Path) -> _Assets:
        page = (folder / "index.html").read_text()
        by_name: dict[str, tuple[bytes, str]] = {}
        for path in sorted(folder.iterdir()):
            if path.suffix not in cls._MEDIA:
                continue
            body = path.read_bytes()
            hashed = f"{path.stem}.{hashlib.sha256(body).hexdigest()[:16]}{path.suffix}"
            by_name[hashed] = (body, cls._MEDIA[path.suffix])
            page = page.replace(f"/console/static/{path.name}", f"/console/static/{hashed}")
        return cls(page.encode(), by_name)


async def _body(request: Request) -> dict[str, Any]:
    """A call's JSON object (an empty or unreadable body is an empty request: its handler names what is missing)."""
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _foreign(request: Request) -> Response | None:
    """A refusal for a request another site's page made (its Origin is not this server), else None."""
    origin = request.headers.get("origin")
    # The host, not the scheme: behind a proxy that ends TLS the browser says https and the node sees http.
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
        return _json({"error": "refused: the request came from another site"}, 403, _UNREAD)
    return None


def _as_dict(answer: object) -> dict[str, Any]:
    return dict(answer) if isinstance(answer, dict) else {"answer": answer}


def _new_device() -> str:
    return f"browser-{secrets.token_hex(8)}"


def _json(body: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        _ENCODER.encode(body), status_code=status, media_type="application/json", headers=dict(headers or {})
    )
