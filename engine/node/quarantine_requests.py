"""What an operator asks of the quarantine over the admin socket: list, retry, resend edited, discard, resolve.

Each action needs its permission (`quarantine.retry` to send an item into
the log again, as it was or edited; `quarantine.resolve` to close it
without), and each is audited with what became of it (done, or why not).
Reading an item's bytes stays where it was (`vigil quarantine show`, with
`quarantine.content`): these requests return none.
"""

from __future__ import annotations

import base64
import binascii
from typing import final

from engine.auth import AuthEndpoint, Permission
from engine.infra.admin_socket import AdminError, Handler
from engine.node.quarantine_desk import QuarantineAction, QuarantineActionError, QuarantineDesk

__all__ = ["QuarantineRequests", "permission_for"]


def permission_for(action: QuarantineAction) -> Permission:
    """The permission an action needs."""
    sends = action in (QuarantineAction.RETRY, QuarantineAction.RESEND)
    return Permission.QUARANTINE_RETRY if sends else Permission.QUARANTINE_RESOLVE


def audit_detail(qid: int, outcome: str, note: str = "") -> str:
    """What the audit trail says of one action: the item, what became of it (or why not), and the reason given."""
    note = note.strip()
    return f"item {qid}: {outcome}" + (f"; {note}" if note else "")


@final
class QuarantineRequests:
    """The admin socket's handler for `vigil quarantine retry|resend|discard|resolve` on a running node."""

    def __init__(self, auth: AuthEndpoint, desk: QuarantineDesk) -> None:
        self._auth = auth
        self._desk = desk

    def handlers(self) -> dict[str, Handler]:
        return {"quarantine_act": self._act, "quarantine_list": self._list}

    async def _list(self, request: dict[str, object]) -> object:
        """The items' metadata (`quarantine.metadata`: no content, so not a PHI view)."""
        await self._auth.authorize(request, Permission.QUARANTINE_METADATA, action="quarantine_list")
        return await self._desk.listed(open_only=request.get("all") is not True)

    async def _act(self, request: dict[str, object]) -> object:
        try:
            action = QuarantineAction(request.get("action"))
        except ValueError:
            raise AdminError(f"unknown quarantine action {request.get('action')!r}") from None
        qid, note = request.get("qid"), request.get("note", "")
        if not isinstance(qid, int) or isinstance(qid, bool) or not isinstance(note, str):
            raise AdminError("a quarantine action needs qid (a number) and note (text)")
        raw = _raw(request) if action is QuarantineAction.RESEND else None
        name = f"quarantine_{action.value}"
        access = await self._auth.authorize(request, permission_for(action), action=name)
        try:
            answer = await self._desk.act(action, qid, by=access.user.id, note=note, raw=raw)
        except QuarantineActionError as refused:
            await self._auth.acted(access, name, audit_detail(qid, f"not done: {refused}"))
            raise AdminError(str(refused)) from None
        await self._auth.acted(access, name, audit_detail(qid, str(answer["outcome"]), note))
        return answer


def _raw(request: dict[str, object]) -> bytes:
    encoded = request.get("raw_base64")
    if not isinstance(encoded, str):
        raise AdminError("a resend needs the edited message (raw_base64)")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise AdminError("the edited message is not valid base64") from None
