"""Intake: from a source's bytes to answers, through the lanes. One message, a stream, several at once.

- `ingest_one`: one message a source waits on (an MLLP frame): classified in
  the loop (a large one, in a parse worker), admitted to its lane, answered
  once the lane worker has made it durable or refused it.
- `ingest_stream`: every message of one input (stdin, a dropped file, a
  forward), answered in input order. A small input goes one by one (up to
  `_STREAM_WINDOW` in flight, each waiting only for the previous message of
  its own patient); a large one is parsed in worker processes, in chunks,
  and appended in windows of lane groups (`engine.core.windows`).
- `ingest_messages`: several source messages at once (a NATS batch), each
  possibly holding several: one outcome and one JSON reply for each.

Intake counts what is in flight, so a stopping node waits for it (`idle`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import final

import anyio
import msgspec
import structlog
from opentelemetry import propagate, trace
from opentelemetry.trace import Span

from engine.core.errors import InputError, MessageError
from engine.core.model import Envelope, Kind, Lane
from engine.core.outcome import IngestResult, Outcome, worst
from engine.core.split import Piece, split_input
from engine.core.windows import patient_hint, windows
from engine.infra.clock import monotonic
from engine.infra.config import Config
from engine.infra.memory import release_free_memory
from engine.infra.telemetry import Telemetry
from engine.ingress.parse_pool import Parsed, ParsePool
from engine.node.lane_items import Group, Work, timed_out
from engine.node.refusals import Refusals
from lanes import Classification, Classifier, LaneScheduler, Pacer

__all__ = ["Intake"]

_log = structlog.get_logger("vigil.node")

# A chunk's lanes (None: not groupable), patient hints, and what a worker made of each (None: not parsed yet).
_Parsed = tuple[list[Classification | None], list[bytes | None], list[Envelope | InputError | None]]


@final
class Intake:
    """What every source calls: it answers messages and never touches a socket or a file itself."""

    def __init__(
        self,
        config: Config,
        classifier: Classifier,
        parse_pool: ParsePool,
        scheduler: LaneScheduler[Group],
        refusals: Refusals,
        *,
        pacer: Pacer,
        telemetry: Telemetry,
        clock: Callable[[], datetime],
    ) -> None:
        self._pacer = pacer
        self._config = config
        self._classifier = classifier
        self._parse_pool = parse_pool
        self._scheduler = scheduler
        self._refusals = refusals
        self._telemetry = telemetry
        self._clock = clock
        # anyio.Event() looks the backend up each time; a message makes one or two: resolved once, here.
        self._new_event: Callable[[], anyio.Event] = type(anyio.Event())
        # The per-message debug line through a logger bound once: the module's lazy proxy binds on every call.
        self._message_log = _log.bind()
        self.in_flight = 0
        self._idle = anyio.Event()
        self._idle.set()

    async def idle(self) -> None:
        """Until nothing is in flight (a stopping node's drain)."""
        await self._idle.wait()

    # -- entry points ------------------------------------------------------------------

    async def ingest_one(self, raw: bytes, source: str, kind: Kind) -> tuple[IngestResult, MessageError | None]:
        """One message its source waits on; the answer and the reason to report with it."""
        return await self._ingest(raw, source, kind, in_batch=False)

    async def ingest_stream(self, raw: bytes, source: str) -> list[IngestResult]:
        """Every message of one input (stdin, a file), answered in input order.

        A large input is cut into messages off the event loop: 100,000 messages
        took the loop away from critical traffic for most of a second.
        """
        limit = self._config.ingest.message_bytes_max
        if len(raw) < _SPLIT_IN_LOOP_BYTES_MAX:
            return await self._ingest_pieces(split_input(raw, limit), source)
        return await self._ingest_pieces(await anyio.to_thread.run_sync(split_input, raw, limit), source)

    async def ingest_messages(self, payloads: Sequence[bytes], source: str) -> list[tuple[Outcome, bytes]]:
        """Several source messages at once (a NATS batch): an outcome and a JSON reply for each.

        A message may hold several (an NDJSON line set, a batch file): its outcome
        is the worst of theirs (`engine.core.outcome.worst`).
        """
        limit = self._config.ingest.message_bytes_max
        split = [split_input(payload, limit) for payload in payloads]
        results = await self._ingest_pieces([piece for pieces in split for piece in pieces], source)
        answers: list[tuple[Outcome, bytes]] = []
        start = 0
        for pieces in split:
            mine = results[start : start + len(pieces)]
            start += len(pieces)
            answers.append((worst(r.outcome for r in mine), msgspec.json.encode(mine)))
        return answers

    # -- an input of many messages -------------------------------------------------------

    async def _ingest_pieces(self, pieces: list[Piece], source: str) -> list[IngestResult]:
        """The messages of one input, answered in input order, in windows of lane groups (`engine.core.windows`).

        A large input is parsed in worker processes (`engine.ingress.parse_pool`),
        in chunks, while the windows of the chunks already parsed are appended;
        a small one (or one the workers cannot take) is parsed in the loop.
        """
        results: list[IngestResult] = [IngestResult(Outcome.RETRY)] * len(pieces)
        if len(pieces) < self._config.ingest.parse_pool_messages_min:
            everything = range(len(pieces))
            await self._ingest_chunk(pieces, everything, await self._parse_here(pieces, everything), source, results)
            return results
        received = self._clock().isoformat(timespec="milliseconds")
        spans = [
            range(start, min(len(pieces), start + _PARSE_CHUNK_MESSAGES))
            for start in range(0, len(pieces), _PARSE_CHUNK_MESSAGES)
        ]
        ahead: deque[asyncio.Future[tuple[bytes, dict[int, InputError]]] | None] = deque()
        for k, span in enumerate(spans):
            # A few chunks ahead, no more: parsed envelopes weigh several times their bytes.
            for later in spans[k + len(ahead) : k + _PARSE_CHUNKS_AHEAD]:
                messages = [(pieces[i].data, pieces[i].in_batch) for i in later if _groupable(pieces[i])]
                ahead.append(self._parse_pool.submit(messages, received, source))
            future = ahead.popleft()  # this span's
            answer = await self._parse_pool.result(future) if future is not None else None
            await self._pacer.pace()  # bulk work: its chunk is unpacked once urgent messages are answered
            parsed = await self._parse_here(pieces, span) if answer is None else _unpack(pieces, span, answer)
            await self._ingest_chunk(pieces, span, parsed, source, results)
        return results

    async def _parse_here(self, pieces: list[Piece], span: range) -> _Parsed:
        """Lanes and patient hints of the pieces of `span`, classified in the loop (parsed later, in the lane).

        Bulk work, in slices (`lanes.pacing.slice_ms`): a NATS batch's 256
        messages classified in one go held the loop for 3-4 ms.
        """
        classified: list[Classification | None] = []
        hints: list[bytes | None] = []
        for piece in (pieces[i] for i in span):
            await self._pacer.slice()
            lane = hint = None
            if _groupable(piece):
                hint = patient_hint(piece.data)
                # A refusal is made and explained one by one, in the window that holds it.
                with contextlib.suppress(InputError):
                    lane = self._classifier.classify_hl7(piece.data, in_batch=piece.in_batch)
            classified.append(lane)
            hints.append(hint)
        return classified, hints, [None] * len(span)

    async def _ingest_chunk(
        self, pieces: list[Piece], span: range, parsed: _Parsed, source: str, results: list[IngestResult]
    ) -> None:
        """The pieces of `span`, window by window: each window's lane groups side by side."""
        classified, hints, envelopes = parsed
        lanes = [c.lane if c is not None else None for c in classified]
        for window in windows(lanes, hints, _GROUP_MESSAGES_MAX):
            await self._pacer.pace()  # each window, once urgent messages in flight are answered
            if window.one_by_one:
                alone = [pieces[span.start + i] for i in window.one_by_one]
                answered = await self._ingest_one_by_one(alone, source)
                for i, result in zip(window.one_by_one, answered, strict=True):
                    results[span.start + i] = result
                continue
            async with anyio.create_task_group() as tg:
                for lane, indexes in window.groups:
                    works = [
                        Work(
                            pieces[span.start + i].data,
                            source,
                            Kind.HL7V2,
                            in_batch=pieces[span.start + i].in_batch,
                            classified=classified[i],
                            parsed=envelopes[i],
                        )
                        for i in indexes
                    ]
                    tg.start_soon(self._ingest_group, lane, works, [span.start + i for i in indexes], results)

    async def _ingest_one_by_one(self, pieces: list[Piece], source: str) -> list[IngestResult]:
        """Messages answered in order; up to `_STREAM_WINDOW` in flight at once, so the log can group-commit.

        A message waits for the previous one *of the same patient* to be
        durable first, so no patient's history is reordered.
        """
        results: list[IngestResult | None] = [None] * len(pieces)
        window = anyio.Semaphore(_STREAM_WINDOW)
        last: dict[bytes, anyio.Event] = {}

        async def one(index: int, before: anyio.Event | None, mine: anyio.Event) -> None:
            piece = pieces[index]
            try:
                if before is not None:
                    await before.wait()
                if piece.error is not None:
                    results[index] = await self._refusals.reject(piece.data or b"", source, piece.error)
                else:
                    outcome = await self._ingest(piece.data, source, piece.kind, in_batch=piece.in_batch)
                    results[index] = outcome[0]
            finally:
                mine.set()
                window.release()

        async with anyio.create_task_group() as tg:
            for index, piece in enumerate(pieces):
                await window.acquire()
                mine = anyio.Event()
                key = patient_hint(piece.data) if piece.kind is Kind.HL7V2 and piece.error is None else None
                before = last.get(key) if key else None
                if key:
                    last[key] = mine
                tg.start_soon(one, index, before, mine)
        return [r if r is not None else IngestResult(Outcome.RETRY) for r in results]

    # -- through a lane ------------------------------------------------------------------

    async def _ingest(
        self, raw: bytes, source: str, kind: Kind, *, in_batch: bool
    ) -> tuple[IngestResult, MessageError | None]:
        large = kind is Kind.HL7V2 and len(raw) >= self._config.ingest.large_message_bytes
        try:
            return await self._ingest_one(raw, source, kind, in_batch=in_batch, large=large)
        finally:
            if large:  # what it took (parse, envelope, frame) goes back to the system
                await anyio.to_thread.run_sync(release_free_memory)

    async def _ingest_one(
        self, raw: bytes, source: str, kind: Kind, *, in_batch: bool, large: bool
    ) -> tuple[IngestResult, MessageError | None]:
        made = None
        if large:  # classified and parsed in a worker, away from the loop that answers critical traffic
            received = self._clock().isoformat(timespec="milliseconds")
            made = await self._parse_pool.parse_one(raw, in_batch=in_batch, received_at=received, source=source)
        if made is not None and made[0] is not None:
            classified, parsed = made
        else:
            parsed = None
            try:
                classified = self._classifier.classify_hl7(raw, in_batch=in_batch) if kind is Kind.HL7V2 else None
            except InputError as exc:
                return await self._refusals.reject(raw, source, exc), exc
        lane = classified.lane if classified is not None else Lane.STANDARD
        work = Work(raw, source, kind, in_batch=in_batch, classified=classified, parsed=parsed)
        started = monotonic()
        attributes = {"vigil.lane": lane.value, "vigil.kind": kind.value}
        span_scope: contextlib.AbstractContextManager[Span | None] = (
            self._telemetry.tracer.start_as_current_span("vigil.message", attributes=attributes)
            if self._telemetry.tracing
            else contextlib.nullcontext()
        )
        with span_scope as span:
            work.trace = _traceparent(span)
            late = await self._through_lane(lane, Group([work], self._new_event()))
            result, reason = timed_out() if late else (work.result, work.reason)
            self._answered(span, lane, work, result, (monotonic() - started) * 1000)
        return result, reason

    async def _through_lane(self, lane: Lane, group: Group, *, paced: bool = True) -> bool:
        """A group admitted to its lane and waited for; True if `ack_timeout_s` passed first.

        A critical or standard group is urgent while it is in flight: batch
        work steps aside for it (`lanes.pacing`); a batch group steps aside
        before it is admitted, unless its input's windows are `paced` already.
        """
        timeout = self._config.mllp.ack_timeout_s
        urgent = self._pacer.urgent() if lane is not Lane.BATCH else contextlib.nullcontext()
        with urgent, self._counted_in_flight(len(group.works)), anyio.move_on_after(timeout) as waited:
            if lane is Lane.BATCH and paced:
                await self._pacer.pace()
            await self._scheduler.admit(lane, group, here=len(group.works) == 1)  # an input's groups: side by side
            if not group.done.is_set():  # served in this task: done, and a wait would still yield a turn
                await group.done.wait()
        return waited.cancelled_caught

    async def _ingest_group(
        self, lane: Lane, works: list[Work], indexes: Sequence[int], results: list[IngestResult]
    ) -> None:
        """Messages of one lane from one input: one scheduler turn, one append; each answered on its own."""
        group = Group(works, self._new_event())
        started = monotonic()
        # One span per message, as on the one-by-one path: receive to durable.
        attributes = {"vigil.lane": lane.value, "vigil.kind": Kind.HL7V2.value}
        tracer = self._telemetry.tracer if self._telemetry.tracing else None
        spans = [tracer.start_span("vigil.message", attributes=attributes) if tracer else None for _ in works]
        for work, span in zip(works, spans, strict=True):
            work.trace = _traceparent(span)
        await self._through_lane(lane, group, paced=False)  # its window was
        elapsed_ms = (monotonic() - started) * 1000
        for index, work, span in zip(indexes, group.works, spans, strict=True):
            results[index] = work.result if work.answered else timed_out()[0]
            self._answered(span, lane, work, results[index], elapsed_ms)
            if span is not None:
                span.end()

    @contextlib.contextmanager
    def _counted_in_flight(self, count: int) -> Iterator[None]:
        """Messages in flight, so a stop waits for them (`idle`)."""
        if self.in_flight == 0:
            self._idle = anyio.Event()
        self.in_flight += count
        try:
            yield
        finally:
            self.in_flight -= count
            if self.in_flight == 0:
                self._idle.set()

    def _answered(self, span: Span | None, lane: Lane, work: Work, result: IngestResult, elapsed_ms: float) -> None:
        """A message's span attributes, metrics and canonical log line (at debug; nothing identifies a patient)."""
        if span is not None:
            span.set_attribute("vigil.outcome", result.outcome.value)
            span.set_attribute("vigil.message_type", work.message_type)
            if result.lsns:
                span.set_attribute("vigil.lsn", result.lsns[0])
                span.add_event("durable")
        self._telemetry.messages.add(1, {"vigil.lane": lane.value, "vigil.outcome": result.outcome.value})
        self._telemetry.ack_latency.record(elapsed_ms, {"vigil.lane": lane.value})
        lsn = result.lsns[0] if result.lsns else None
        self._message_log.debug(
            "message",
            lane=lane.value,
            type=work.message_type,
            outcome=result.outcome.value,
            lsn=lsn,
            ms=round(elapsed_ms, 3),
        )


def _traceparent(span: Span | None) -> str:
    """The span's W3C traceparent ("" without a span): kept with the message for its deliveries."""
    if span is None:
        return ""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent", "")


def _groupable(piece: Piece) -> bool:
    """An HL7 v2 message cut cleanly: it may go in a lane group (anything else is answered one by one)."""
    return piece.kind is Kind.HL7V2 and piece.error is None


def _unpack(pieces: list[Piece], span: range, answer: tuple[list[Parsed], dict[int, InputError]]) -> _Parsed:
    """A worker's answer for the groupable pieces of `span`, spread back over the whole span."""
    parsed, refused = answer
    classified: list[Classification | None] = [None] * len(span)
    hints: list[bytes | None] = [None] * len(span)
    envelopes: list[Envelope | InputError | None] = [None] * len(span)
    k = 0
    for j, i in enumerate(span):
        if not _groupable(pieces[i]):
            continue
        made = parsed[k]
        classified[j], hints[j] = made.classified, made.hint
        envelopes[j] = refused.get(k, made.envelope)
        k += 1
    return classified, hints, envelopes


_SPLIT_IN_LOOP_BYTES_MAX = 256 * 1024  # a larger input is cut into messages in a worker thread
_STREAM_WINDOW = 512  # messages of one input in flight at once, one by one
_GROUP_MESSAGES_MAX = 64  # messages of one input per window of lane groups
_PARSE_CHUNK_MESSAGES = 256  # messages per hand-off to a parse worker
_PARSE_CHUNKS_AHEAD = 8  # chunks handed off before the loop has taken their turn
