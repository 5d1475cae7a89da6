"""An operator's actions on quarantined input: retry, resend as edited, discard, mark resolved.

The same rules whether a running node carries them out (over its admin
socket, `NodeRequests`) or the CLI does on a stopped node's data directory:
only the way in to the log differs (`Ingest`). What was refused stays in
quarantine whatever happens; an action appends a resolution naming the item,
who acted and why. A retried or resent message enters like any other input
(classified into its lane, made durable, applied), from the source
`quarantine:<id>`, so its log record names the item it came from and the
item names the record's LSN.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Final, final

import anyio

from engine.core.decode import Decoder, decode_input
from engine.core.errors import VigilError
from engine.core.outcome import IngestResult, Outcome
from engine.infra.clock import utc_now
from engine.search import header_metadata
from engine.wal import POISON_RECORD, Quarantine, QuarantineItem

__all__ = ["Check", "Ingest", "QuarantineAction", "QuarantineActionError", "QuarantineDesk", "refusal_of"]

# One input into the log, as every source's (the node's intake, or a stopped node's log opened by the CLI).
Ingest = Callable[[bytes, str], Awaitable[list[IngestResult]]]
# Why this input would be refused now, or None: checked before it is sent, so that input still refused
# is said to the operator and not quarantined a second time.
Check = Callable[[bytes], str | None]

NOTE_CHARS_MAX: Final = 2000
SOURCE_PREFIX: Final = "quarantine:"


class QuarantineAction(enum.Enum):
    RETRY = "retry"  # the same bytes again (the configuration has changed since)
    RESEND = "resend"  # edited bytes, a new message; the original stays as it was
    DISCARD = "discard"  # not to be accepted (a test message, a duplicate sent by hand)
    RESOLVE = "resolve"  # dealt with elsewhere (the sender sent it again corrected)


class QuarantineActionError(VigilError):
    """The action was not carried out; the item is as it was. The message says why."""


def refusal_of(decoder: Decoder) -> Check:
    """The check of `decoder`'s rules: the first refusal of any message in the input, or None."""

    def check(raw: bytes) -> str | None:
        decoded = decode_input(raw, decoder, received_at=utc_now(), source=SOURCE_PREFIX)
        if not decoded:
            return "no message found"
        return next((d.error.reason for d in decoded if d.error is not None), None)

    return check


@final
class QuarantineDesk:
    """Carries out operators' actions on one quarantine."""

    def __init__(self, quarantine: Quarantine, ingest: Ingest, check: Check) -> None:
        self._quarantine = quarantine
        self._ingest = ingest
        self._check = check
        self._busy: set[int] = set()  # items being acted on: a second action on one waits its turn by refusal

    async def listed(self, *, open_only: bool) -> list[dict[str, object]]:
        """Every item's metadata (sender, type and control id read from its head; never its content)."""
        items = await anyio.to_thread.run_sync(self._quarantine.items)
        return [
            {
                "qid": item.qid,
                "at": item.at,
                "source": item.source,
                "reason": item.reason,
                "sender": sender,
                "message_type": mtype,
                "control_id": control_id,
                "bytes": len(item.raw),
                "open": item.open,
                "resolved": item.resolved,
                "resolved_by": item.resolved_by,
            }
            for item in items
            if item.open or not open_only
            for sender, mtype, control_id in [header_metadata(item.raw)]
        ]

    async def act(
        self, action: QuarantineAction, qid: int, *, by: str, note: str = "", raw: bytes | None = None
    ) -> dict[str, object]:
        """Carry out `action` on item `qid` for user `by`; what became of it (outcome, LSNs).

        Raises:
            QuarantineActionError: no such item, already resolved, no reason
                given where one is needed, or the input is still refused.
        """
        note = note.strip()
        if len(note) > NOTE_CHARS_MAX:
            raise QuarantineActionError(f"the reason is longer than {NOTE_CHARS_MAX} characters")
        if qid in self._busy:
            raise QuarantineActionError(f"item {qid} is being acted on by someone else: look again in a moment")
        self._busy.add(qid)
        try:
            return await self._act(action, qid, by, note, raw)
        finally:
            self._busy.discard(qid)

    async def _act(
        self, action: QuarantineAction, qid: int, by: str, note: str, raw: bytes | None
    ) -> dict[str, object]:
        item = await anyio.to_thread.run_sync(self._quarantine.get, qid)
        if item is None:
            raise QuarantineActionError(f"no quarantined item {qid}")
        if not item.open:
            raise QuarantineActionError(f"item {qid} is already resolved: {item.resolved}")
        if action in (QuarantineAction.DISCARD, QuarantineAction.RESOLVE):
            if not note:
                raise QuarantineActionError(f"to {action.value} an item, say why (--reason)")
            outcome = "discarded" if action is QuarantineAction.DISCARD else "resolved"
            await self._resolved(qid, outcome, by, note)
            return {"qid": qid, "outcome": outcome}
        return await self._send(action, item, by, note, raw)

    async def _send(
        self, action: QuarantineAction, item: QuarantineItem, by: str, note: str, raw: bytes | None
    ) -> dict[str, object]:
        """Retry (the item's bytes) or resend (edited bytes): accepted into the log, then resolved."""
        if action is QuarantineAction.RESEND:
            if not raw or not raw.strip():
                raise QuarantineActionError("the edited message is empty")
            if raw == item.raw:
                raise QuarantineActionError("the edited message is the same as the original: retry it instead")
        if action is QuarantineAction.RETRY and item.error.get("type") == POISON_RECORD:
            raise QuarantineActionError(
                f"item {item.qid} is a record already in the log (LSN {item.error.get('lsn')}) that failed its "
                "patient's actor: resend a corrected message, or resolve it once the fault is mended"
            )
        data = item.raw if action is QuarantineAction.RETRY else raw
        assert data is not None
        why = await anyio.to_thread.run_sync(self._check, data)
        if why is not None:
            what = f"item {item.qid}" if action is QuarantineAction.RETRY else "the edited message"
            raise QuarantineActionError(f"{what} is still refused: {why}")
        results = await self._ingest(data, f"{SOURCE_PREFIX}{item.qid}")
        failed = [r for r in results if r.outcome is not Outcome.ACCEPTED]
        if failed or not results:
            # Refused after all (a rule the check does not see), or not durable: the item stays open.
            error = failed[0].error if failed and failed[0].error else {}
            again = f" (quarantined again as item {error['quarantine_id']})" if "quarantine_id" in error else ""
            raise QuarantineActionError(f"not accepted: {error.get('reason') or 'not recorded, try again'}{again}")
        lsns = [lsn for r in results for lsn in r.lsns]
        listed = ", ".join(map(str, lsns)) + (" (already in the log)" if all(r.duplicate for r in results) else "")
        outcome = f"accepted at LSN {listed}" if action is QuarantineAction.RETRY else f"resent as edited: LSN {listed}"
        await self._resolved(item.qid, outcome, by, note)
        return {"qid": item.qid, "outcome": outcome, "lsns": lsns}

    async def _resolved(self, qid: int, outcome: str, by: str, note: str) -> None:
        at = utc_now()
        await anyio.to_thread.run_sync(lambda: self._quarantine.resolve(qid, outcome=outcome, at=at, by=by, note=note))
