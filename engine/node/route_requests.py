"""What an operator asks of the routes over the admin socket: their state, their refusals, and actions on them.

A route's state and its refusals' metadata (LSN, lane, type, control id,
the destination's code) carry no PHI; a refusal's answer text may quote the
message, so it needs log content (by role, or by breaking the glass for that
patient). Every action is audited once carried out, with the patient it
concerns and what it did.
"""

from __future__ import annotations

from typing import final

import msgspec

from actors import parse_moment
from engine.auth import AuthEndpoint, Permission
from engine.infra.admin_socket import AdminError, Handler
from engine.routes import Refusal, Route, Routes

__all__ = ["RouteRequests"]


@final
class RouteRequests:
    """The admin socket's handlers for `vigil routes`."""

    def __init__(self, auth: AuthEndpoint, routes: Routes) -> None:
        self._auth = auth
        self._routes = routes

    def handlers(self) -> dict[str, Handler]:
        return {
            "routes": self._list,
            "route_errors": self._errors,
            "route_error": self._error,
            "route_retry": self._retry,
            "route_skip": self._skip,
            "route_pause": self._pause,
            "route_resume": self._resume,
            "route_replay": self._replay,
        }

    async def _list(self, request: dict[str, object]) -> object:
        await self._auth.authorize(request, Permission.STATUS_READ, action="routes")
        running = {s.name: msgspec.to_builtins(s) for s in self._routes.statistics()}
        return [running.get(name, {"name": name, "state": "restarting"}) for name in self._routes.configs]

    async def _errors(self, request: dict[str, object]) -> object:
        route = self._route(request)
        await self._auth.authorize(request, Permission.LOG_METADATA, action="route_errors")
        return [_metadata(r) for r in route.refusals()]

    async def _error(self, request: dict[str, object]) -> object:
        route = self._route(request)
        refusal = _find(route, _lsn(request))
        await self._auth.authorize(request, Permission.LOG_CONTENT, patient=refusal.patient, action="route_error")
        return {**_metadata(refusal), "answer": refusal.answer}

    async def _retry(self, request: dict[str, object]) -> object:
        route = self._route(request)
        refusal = _find(route, _lsn(request))
        access = await self._auth.authorize(
            request, Permission.ROUTES_MANAGE, patient=refusal.patient, action="route_retry"
        )
        try:
            await route.retry(refusal.lsn)
        except LookupError as exc:
            raise AdminError(str(exc)) from None
        await self._auth.acted(
            access, "route_retry", f"{route.config.name}: LSN {refusal.lsn}", patient=refusal.patient
        )
        return _metadata(refusal)

    async def _skip(self, request: dict[str, object]) -> object:
        route = self._route(request)
        refusal = _find(route, _lsn(request))
        access = await self._auth.authorize(
            request, Permission.ROUTES_MANAGE, patient=refusal.patient, action="route_skip"
        )
        try:
            route.skip(refusal.lsn)
        except LookupError as exc:
            raise AdminError(str(exc)) from None
        await self._auth.acted(access, "route_skip", f"{route.config.name}: LSN {refusal.lsn}", patient=refusal.patient)
        return _metadata(refusal)

    async def _pause(self, request: dict[str, object]) -> object:
        route = self._route(request)
        access = await self._auth.authorize(request, Permission.ROUTES_MANAGE, action="route_pause")
        route.pause()
        await self._auth.acted(access, "route_pause", route.config.name)
        return msgspec.to_builtins(route.statistics())

    async def _resume(self, request: dict[str, object]) -> object:
        route = self._route(request)
        access = await self._auth.authorize(request, Permission.ROUTES_MANAGE, action="route_resume")
        route.resume()
        await self._auth.acted(access, "route_resume", route.config.name)
        return msgspec.to_builtins(route.statistics())

    async def _replay(self, request: dict[str, object]) -> object:
        """History again: from an LSN, or from a time (the log's own recording time), optionally one patient or type."""
        route = self._route(request)
        since = _moment(request, "since")
        first = request.get("from_lsn", 1)
        if not isinstance(first, int) or isinstance(first, bool) or first < 1:
            raise AdminError("from_lsn must be a positive whole number")
        patient, message_type = _text(request, "patient"), _text(request, "type")
        access = await self._auth.authorize(request, Permission.ROUTES_MANAGE, patient=patient, action="route_replay")
        try:
            replay = route.replay(first, since=since, patient=patient, message_type=message_type, by=access.user.id)
        except LookupError as exc:
            raise AdminError(str(exc)) from None
        detail = f"{route.config.name}: from LSN {first}" + (f", since {since}" if since else "")
        detail += f", type {message_type}" if message_type else ""
        await self._auth.acted(access, "route_replay", detail, patient=patient)
        return {"route": route.config.name, "first_lsn": first, "last_lsn": replay.last_lsn, "since": since}

    def _route(self, request: dict[str, object]) -> Route:
        name = request.get("route")
        if not isinstance(name, str) or not name:
            raise AdminError("a route name is needed")
        try:
            return self._routes.get(name)
        except LookupError as exc:
            raise AdminError(str(exc)) from None


def _text(request: dict[str, object], name: str) -> str:
    value = request.get(name) or ""
    if not isinstance(value, str):
        raise AdminError(f"{name} must be text")
    return value


def _moment(request: dict[str, object], name: str) -> str:
    """A time, read strictly as the record's own are compared (ISO 8601, UTC); "" when not given."""
    value = _text(request, name)
    if not value:
        return ""
    try:
        return parse_moment(value)
    except ValueError as exc:
        raise AdminError(f"{name}: {exc}") from None


def _lsn(request: dict[str, object]) -> int:
    value = request.get("lsn")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise AdminError("an LSN (a positive whole number) is needed")
    return value


def _find(route: Route, lsn: int) -> Refusal:
    refusal = next((r for r in route.refusals() if r.lsn == lsn), None)
    if refusal is None:
        raise AdminError(f"no refused message at LSN {lsn} on route {route.config.name}")
    return refusal


def _metadata(refusal: Refusal) -> dict[str, object]:
    """A refusal without its answer text, and with the control id but not the patient (no PHI)."""
    doc = msgspec.to_builtins(refusal)
    del doc["answer"], doc["patient"]
    return dict(doc)
