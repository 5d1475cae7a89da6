"""The lane worker: what a lane does with a group of messages once the scheduler starts it.

Parse and map each message (unless a worker process did), append the group
durably in one append, answer each message, then hand the records on
(`engine.node.fanout`). A refusal is its own message's alone: the others of
the group go on. In a cluster the append goes through the partition router
(`engine.node.partition_router`) instead of straight to the local log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, final

import msgspec
import structlog

from engine.core.decode import Decoder
from engine.core.errors import CharsetError, InputError, TemporaryError, error_summary
from engine.core.model import Envelope, InvalidText, Kind, Lane
from engine.core.outcome import IngestResult, Outcome
from engine.infra.telemetry import Telemetry
from engine.node.fanout import Fanout
from engine.node.lane_items import Group, Work
from engine.node.refusals import Refusals
from engine.wal import DiskFullError, Position, WALFailedError, WriteAheadLog
from lanes import Pacer

__all__ = ["Decoded", "LaneWorker", "Router", "accept", "retry_all"]

_log = structlog.get_logger("vigil.node")

# Each message of a group and the records made of it (none for a message that maps to nothing).
Decoded = list[tuple[Work, list[Envelope]]]


class Router(Protocol):
    """Where a group's records are appended when the node is one of a cluster."""

    async def route(self, owned: Decoded) -> list[tuple[list[Envelope], list[Position]]]:
        """Append (or forward) and answer each message; the records appended here, to be applied."""
        ...


@final
class LaneWorker:
    """Handles one group per call (`handle`); the lane scheduler runs as many at once as a lane has workers."""

    def __init__(
        self,
        wal: WriteAheadLog,
        decoder: Decoder,
        refusals: Refusals,
        fanout: Fanout,
        telemetry: Telemetry,
        *,
        pacer: Pacer,
        clock: Callable[[], datetime],
        router: Router | None = None,
    ) -> None:
        self._pacer = pacer
        self._wal = wal
        self._decoder = decoder
        self._refusals = refusals
        self._fanout = fanout
        self._telemetry = telemetry
        self._clock = clock
        self._router = router
        self.invalid_text = 0  # messages whose invalid bytes were replaced (`engine.core.hl7.parse`)

    async def handle(self, lane: Lane, group: Group) -> None:
        """A lane worker's turn: decode, append durably, answer, hand on.

        An unexpected error (a bug, not a message's fault) is logged, and every
        message of the group not yet answered is answered "retry" at once, so
        no sender waits out its ACK timeout; the scheduler counts the failure.
        A batch group steps aside (`lanes.pacing`) before its parse while
        urgent messages are in flight (never between durable and handed on);
        an urgent group is not counted in flight while it waits for the log.
        """
        batch = lane is Lane.BATCH
        try:
            if batch and any(work.parsed is None for work in group.works):  # a parse to do here
                await self._pacer.pace()
            with contextlib.nullcontext() if batch else self._pacer.aside():
                applied = await self._durable(group)
        except Exception as exc:
            _log.error("lane.worker_failed", lane=lane.value, error=error_summary(exc))
            retry_all([w for w in group.works if not w.answered], "the node failed to handle this message; retry")
            raise
        finally:
            group.done.set()
        # At once, with no step aside between durable and handed on: the records of one patient reach its
        # actor in log order only if each caller hands its records on as it resumes from the log (an
        # actor ignores a record older than one it has applied: a batch record handed on after a later
        # critical one was missing from the live record, and from its snapshot).
        for envelopes, positions in applied:
            await self._fanout.apply(envelopes, positions)

    async def _durable(self, group: Group) -> list[tuple[list[Envelope], list[Position]]]:
        owned = await self._decode_group(group)
        if self._router is not None:
            return await self._router.route(owned)
        envelopes = [env for _work, made in owned for env in made]
        if not owned:
            return []
        try:
            positions = await self._wal.append(envelopes)
        except (DiskFullError, WALFailedError) as exc:
            retry_all([work for work, _made in owned], str(exc))
            return []
        accept(owned, positions)
        return [(envelopes, positions)]

    async def _decode_group(self, group: Group) -> Decoded:
        """Each message of a group parsed and mapped; a refused one is answered (and quarantined) here."""
        received = self._clock().isoformat(timespec="milliseconds")
        owned: Decoded = []
        several = len(group.works) > 1  # a stream's group of up to 64 parses: 10 ms of the loop in one go
        for work in group.works:
            if several:
                await self._pacer.slice()
            try:
                made = self._decode(work, received)
            except InputError as exc:
                work.finish(Outcome.REJECTED, await self._refusals.reject(work.raw, work.source, exc), exc)
                continue
            work.message_type = made[0].message_type if made else ""
            for env in made:
                if env.invalid_text is not None:
                    self._note_invalid_text(env)
            owned.append((work, made))
        return owned

    def _decode(self, work: Work, received: str) -> list[Envelope]:
        made = self._envelopes(work, received)
        if work.trace:  # the receiving span's trace goes into the log, for the routes' deliveries
            return [msgspec.structs.replace(env, trace_parent=work.trace) for env in made]
        return made

    def _envelopes(self, work: Work, received: str) -> list[Envelope]:
        if isinstance(work.parsed, InputError):
            raise work.parsed
        if work.parsed is not None:
            return [work.parsed]
        if work.kind is Kind.HL7V2:
            hl7 = self._decoder.hl7(
                work.raw, received_at=received, source=work.source, in_batch=work.in_batch, classified=work.classified
            )
            return [hl7]
        return self._decoder.fhir(work.raw, received_at=received, source=work.source)

    def _note_invalid_text(self, env: Envelope) -> None:
        """Invalid bytes replaced in a message that flows on: said and counted (where, never what)."""
        self.invalid_text += 1
        self._telemetry.invalid_text.add(1)
        invalid = env.invalid_text
        assert invalid is not None
        _log.warning(
            "hl7.invalid_text_replaced",
            message_id=env.message_id,
            charset=invalid.charset,
            replaced=invalid.count,
            segment=invalid.first.segment,
            field=invalid.first.field,
            byte_offset=invalid.first.byte_offset,
            hint="set ingest.hl7_sender_charsets for this sender if it sends another character set",
        )


def accept(owned: Sequence[tuple[Work, Sequence[Envelope]]], positions: Sequence[Position]) -> None:
    """Each message answered with its records' LSNs (a duplicate when all were there already)."""
    start = 0
    for work, made in owned:
        mine = positions[start : start + len(made)]
        start += len(made)
        lsns, duplicate = tuple(p.lsn for p in mine), all(p.duplicate for p in mine)
        warning = next((_replaced_text(env.invalid_text) for env in made if env.invalid_text), None)
        work.finish(Outcome.ACCEPTED, IngestResult(Outcome.ACCEPTED, lsns, duplicate), warning)


def _replaced_text(invalid: InvalidText) -> CharsetError:
    """What the sender is told (an ACK warning) of bytes replaced in its message, which was still stored."""
    return CharsetError(
        f"{invalid.count} byte sequence(s) not valid {invalid.charset} were replaced by U+FFFD, the first at byte "
        f"{invalid.first.byte_offset}; the message was stored, with its original bytes",
        invalid.first,
    )


def retry_all(works: Sequence[Work], why: str) -> None:
    """A temporary failure: every one of these messages gets "retry" (AE/CE), and the sender sends it again."""
    error = TemporaryError(why)
    for work in works:
        work.finish(Outcome.RETRY, IngestResult(Outcome.RETRY, error=error.to_dict()), error)
