"""A running route: follows the log, delivers what its filter takes, remembers durably what is settled.

Three kinds of task, one route:

- the reader follows the log from the first unsettled LSN (woken by
  `notify` as records become durable), decodes only what a route needs (in
  a worker thread), and hands what the filter takes to the plan; what the
  filter leaves is settled at once. It reads no further ahead while the
  messages waiting in memory exceed `pending_bytes_max`.
- `connections` senders each take the plan's next message (critical
  patients first, one patient's messages in log order) and deliver it on
  their own connection. A connection that cannot be made is tried again
  after a capped, jittered back-off, and the message goes back to the plan
  at once for another sender: an outage does not age each message's retry
  clock, so a destination that returns is caught up at full speed.
- the keeper saves the ledger when it changed (every
  `state_save_interval_s`), and raises or clears the backlog-age alert.

A destination that is down or slow costs the node nothing but this route's
memory (bounded) and a task waiting: intake, ACKs and other routes do not
wait for it.
"""

from __future__ import annotations

import collections
import contextlib
import random
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Protocol, final

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus
from hdrh.histogram import HdrHistogram
from opentelemetry import propagate, trace

from engine.core.errors import ConfigError, HL7Error
from engine.core.hl7 import CharsetDefaults
from engine.core.model import Lane
from engine.infra.clock import utc_now
from engine.infra.route_config import RouteConfig, parse_destination
from engine.routes.folder_destination import FolderDestination
from engine.routes.http_destination import HttpDestination
from engine.routes.ledger import Ledger, LedgerState, Refusal, Replay
from engine.routes.mllp_destination import MLLPConnection
from engine.routes.nats_destination import NatsDestination
from engine.routes.outcome import Attempt, Verdict
from engine.routes.payload import Payload, PayloadMaker
from engine.routes.plan import DeliveryPlan, Pending
from engine.routes.reading import LogReader, read_candidates
from engine.routes.selection import Candidate, RouteFilter
from engine.wal import OSFiles, SmallFile
from lanes import values_at_percentiles

__all__ = ["LaneDelivery", "Route", "RouteStatistics"]

_log = structlog.get_logger("vigil.routes")
_tracer = trace.get_tracer("vigil.routes")

_READ_RECORDS: Final = 512  # records decoded per trip to the worker thread
_READ_BYTES: Final = 4 * 1024 * 1024
_HISTOGRAM_MAX_US: Final = 3_600_000_000
_RATE_WINDOW_S: Final = 10
_LANES: Final = (Lane.CRITICAL, Lane.STANDARD, Lane.BATCH)
_NOTHING_TO_SEND: Final = "nothing-to-send"  # settled, not sent: not counted as a delivery


@final
class LaneDelivery(msgspec.Struct, frozen=True):
    """One lane of one route, as `vigil routes` shows it."""

    lane: str
    backlog: int
    oldest_age_s: float | None
    delivered: int
    p50_ms: float | None
    p99_ms: float | None


@final
class RouteStatistics(msgspec.Struct, frozen=True):
    """A route's state and counters (no message content)."""

    name: str
    destination: str
    state: str  # delivering, idle, paused, unreachable: <reason>, backlog too old
    lanes: list[LaneDelivery]
    in_flight: int
    delivered: int
    delivered_per_s: float
    retries: int
    resent: int  # sent again after an attempt the destination may have received: possible duplicates
    nothing_to_send: int  # messages the transform made nothing of (no patient, nothing clinical): settled
    handed_over: int  # adopted in a takeover, settled by the route on the partition's earlier owner: not sent
    refused_open: int
    held_patients: int
    settled_through: int  # every LSN up to here is delivered, refused, or not for this route
    read_through: int
    alert: bool
    replays: int  # operators' replays under way (`vigil routes replay`)
    replay_at: int | None  # the LSN the first of them has reached


class _Sender(Protocol):
    """How one connection delivers (MLLP), or the folder for every sender."""

    async def send(self, pending: Pending, payload: Payload, /) -> Attempt: ...

    async def close(self) -> None: ...


@final
class _MLLPSender:
    def __init__(self, connection: MLLPConnection) -> None:
        self._connection = connection

    async def send(self, _pending: Pending, payload: Payload, /) -> Attempt:
        return await self._connection.send(payload.body)

    async def close(self) -> None:
        await self._connection.close()


class _Destination(Protocol):
    """A destination that is told the record (its name in a folder, its id on NATS), shared by the senders."""

    async def send(self, candidate: Candidate, payload: Payload) -> Attempt: ...

    async def close(self) -> None: ...


@final
class _SharedSender:
    def __init__(self, destination: _Destination) -> None:
        self._destination = destination

    async def send(self, pending: Pending, payload: Payload, /) -> Attempt:
        return await self._destination.send(pending.candidate, payload)

    async def close(self) -> None:
        await self._destination.close()


@final
class Route:
    """One `[[routes]]` entry at work over the node's log; `run` is its supervised child."""

    def __init__(
        self,
        config: RouteConfig,
        log: LogReader,
        state_dir: Path,
        *,
        config_dir: Path,
        tls_context: Callable[[Path | None], ssl.SSLContext],
        nats_servers: Sequence[str] = (),
        nats_security: Callable[[], dict[str, object]] = dict,
        charsets: CharsetDefaults | None = None,
        settled_elsewhere: set[str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        # Message ids this route's namesake on another node had settled (a partition taken over): not sent again.
        self._elsewhere = settled_elsewhere if settled_elsewhere is not None else set()
        self._payloads = PayloadMaker(config, charsets or CharsetDefaults())
        # Without an SDK installed, a span costs CPU and goes nowhere: none then (as for intake's).
        self._tracing = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        self._tls_context = tls_context
        self._nats_servers = nats_servers
        self._nats_security = nats_security
        self._log = log
        self._address = parse_destination(config.destination)
        self._config_dir = config_dir
        self._store = SmallFile(state_dir, "state", OSFiles(), LedgerState)
        self._state_dir = state_dir
        self._filter = RouteFilter(config)
        self._plan = DeliveryPlan(fifo=config.order == "fifo")
        self._ledger = Ledger(LedgerState())
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._news = anyio.Event()  # the log grew
        self._work = anyio.Event()  # the plan has something, or an operator changed something
        self._read_through = 0
        self._in_flight = 0
        self._delivered = self._retries = self._resent = self._nothing_to_send = self._handed_over = 0
        self._per_lane = dict.fromkeys(_LANES, 0)
        self._latency = {lane: HdrHistogram(1, _HISTOGRAM_MAX_US, 2) for lane in _LANES}
        self._recent: collections.deque[tuple[int, int]] = collections.deque()  # (second, deliveries in it)
        self._unreachable: str | None = None
        self._running = False
        self._reader_full = False
        self._idle = 0  # senders waiting for work: a delivery wakes them only when there are some
        self._asked = anyio.Event()  # an operator asked for a replay
        self._replaying: set[Pending] = set()  # the replay's messages in the plan, not yet settled
        self._replayed = anyio.Event()

    # -- what the node calls ----------------------------------------------------------

    def notify(self) -> None:
        """New durable records in the log (called by the node after each append)."""
        self._news.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Read, deliver and keep until cancelled; the ledger is saved on the way out."""
        self._ledger = await anyio.to_thread.run_sync(self._load)
        if self.config.on_refused == "hold":
            for refusal in self._ledger.refused.values():
                self._plan.hold(refusal.patient)
        self._read_through = self._ledger.mark
        senders = self._senders()
        self._running = True
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read)
                tg.start_soon(self._replay)
                for sender in senders:
                    tg.start_soon(self._deliver, sender)
                tg.start_soon(self._keep)
                _log.info("route.started", route=self.config.name, settled_through=self._ledger.mark)
                task_status.started()
        finally:
            self._running = False
            with anyio.CancelScope(shield=True):
                for sender in senders:
                    await sender.close()
                if self._ledger.dirty:
                    await anyio.to_thread.run_sync(self._save)

    @property
    def settled_mark(self) -> int:
        """Every LSN up to here is settled (delivered, refused, or not for this route)."""
        return self._ledger.mark

    @property
    def needs_from(self) -> int:
        """The lowest LSN this route may still read from the log (retention keeps it and after)."""
        return self._ledger.needs_from

    # -- operators --------------------------------------------------------------------

    def statistics(self) -> RouteStatistics:
        now = anyio.current_time() if self._running else 0.0
        backlog = self._plan.backlog()
        lanes = []
        for lane in _LANES:
            count, oldest = backlog[lane]
            hist = self._latency[lane]
            seen = hist.get_total_count() > 0
            p50, p99 = values_at_percentiles(hist, (50, 99))
            lanes.append(
                LaneDelivery(
                    lane.value,
                    count,
                    round(now - oldest, 3) if oldest is not None and self._running else None,
                    self._per_lane[lane],
                    p50 / 1000 if seen else None,
                    p99 / 1000 if seen else None,
                )
            )
        return RouteStatistics(
            name=self.config.name,
            destination=self.config.destination,
            state=self._state(),
            lanes=lanes,
            in_flight=self._in_flight,
            delivered=self._delivered,
            delivered_per_s=self._rate(now),
            retries=self._retries,
            resent=self._resent,
            nothing_to_send=self._nothing_to_send,
            handed_over=self._handed_over,
            refused_open=len(self._ledger.refused),
            held_patients=len(self._plan.held),
            settled_through=self._ledger.mark,
            read_through=self._read_through,
            alert=self._too_old(now),
            replays=len(self._ledger.replays),
            replay_at=self._ledger.replays[0].next_lsn if self._ledger.replays else None,
        )

    def refusals(self) -> list[Refusal]:
        return sorted(self._ledger.refused.values(), key=lambda r: r.lsn)

    def pause(self) -> None:
        self._ledger.set_paused(True)

    def resume(self) -> None:
        self._ledger.set_paused(False)
        self._work.set()

    async def retry(self, lsn: int) -> Refusal:
        """A refused message goes again, first for its patient (whose hold ends).

        Raises:
            LookupError: no refusal with that LSN on this route.
        """
        refusal = self._ledger.take_refusal(lsn)
        if refusal is None:
            raise LookupError(f"no refused message at LSN {lsn} on route {self.config.name}")
        found = await anyio.to_thread.run_sync(read_candidates, self._log, lsn, 1, _READ_BYTES)
        if not found or found[0].lsn != lsn:
            self._ledger.refuse(refusal)
            raise LookupError(f"LSN {lsn} is no longer in the log")
        self._ledger.unsettle(lsn)
        self._plan.put_first(found[0], anyio.current_time())
        self._work.set()
        return refusal

    def skip(self, lsn: int) -> Refusal:
        """A refused message is given up (it stays settled); its patient's hold ends.

        Raises:
            LookupError: no refusal with that LSN on this route.
        """
        refusal = self._ledger.take_refusal(lsn)
        if refusal is None:
            raise LookupError(f"no refused message at LSN {lsn} on route {self.config.name}")
        if not any(r.patient == refusal.patient for r in self._ledger.refused.values()):
            self._plan.release(refusal.patient)
        self._work.set()
        return refusal

    def replay(
        self, first_lsn: int, *, since: str = "", patient: str = "", message_type: str = "", by: str = ""
    ) -> Replay:
        """Deliver history again: from `first_lsn` (or the first record at or after `since`) to the log's end now.

        Only what the route's filter takes, narrowed to one patient or one
        message type when given; in log order per patient, beside new traffic.

        Raises:
            LookupError: nothing in the log from there.
        """
        last = self._log.last_lsn
        if first_lsn > last:
            raise LookupError(f"nothing to replay: the log ends at LSN {last}")
        replay = Replay(first_lsn, last, since, patient, message_type, by)
        self._ledger.replays.append(replay)
        self._ledger.dirty = True
        self._asked.set()
        _log.info("route.replay_asked", route=self.config.name, first_lsn=first_lsn, last_lsn=last, by=by)
        return replay

    # -- the reader ---------------------------------------------------------------------

    async def _read(self) -> None:
        next_lsn = self._ledger.mark + 1
        while True:
            self._reader_full = self._plan.bytes >= self.config.pending_bytes_max
            if self._log.last_lsn < next_lsn or self._reader_full:
                await self._news.wait()
                self._news = anyio.Event()
                continue
            found = await anyio.to_thread.run_sync(read_candidates, self._log, next_lsn, _READ_RECORDS, _READ_BYTES)
            if not found:
                await self._news.wait()
                self._news = anyio.Event()
                continue
            now = anyio.current_time()
            ledger, plan = self._ledger, self._plan
            for candidate in found:
                lsn = candidate.lsn
                if ledger.is_settled(lsn):
                    continue
                if self._elsewhere and candidate.message_id in self._elsewhere:
                    self._elsewhere.discard(candidate.message_id)
                    self._handed_over += 1
                    ledger.settle(lsn)
                elif self._filter.matches(candidate):
                    plan.add(candidate, now)
                else:
                    ledger.settle(lsn)
            self._read_through = found[-1].lsn
            next_lsn = found[-1].lsn + 1
            self._work.set()

    async def _replay(self) -> None:
        """Operators' replays, one after the other, a bounded slice of the log at a time."""
        while True:
            if not self._ledger.replays:
                await self._asked.wait()
                self._asked = anyio.Event()
                continue
            replay = self._ledger.replays[0]
            found = await anyio.to_thread.run_sync(
                read_candidates, self._log, replay.next_lsn, _READ_RECORDS, _READ_BYTES
            )
            found = [c for c in found if c.lsn <= replay.last_lsn]
            if not found:
                self._ledger.replays.pop(0)
                self._ledger.dirty = True
                _log.info("route.replay_done", route=self.config.name, last_lsn=replay.last_lsn, by=replay.asked_by)
                continue
            now = anyio.current_time()
            self._replaying = {
                self._plan.add(c, now)
                for c in found
                if self._filter.matches(c) and replay.takes(c.recorded_at, c.patient, c.message_type)
            }
            if self._replaying:
                self._replayed = anyio.Event()
                self._work.set()
                await self._replayed.wait()  # delivered (or refused) before the position moves: at least once
            replay.next_lsn = found[-1].lsn + 1
            self._ledger.dirty = True

    # -- the senders --------------------------------------------------------------------

    def _senders(self) -> list[_Sender]:
        address, config = self._address, self.config
        if address.scheme == "folder":
            folder = FolderDestination(self._config_dir / address.path)
            return [_SharedSender(folder) for _ in range(config.connections)]
        if address.scheme == "nats":
            if not self._nats_servers:
                raise ConfigError(f"routes.{config.name}: a nats: destination needs [nats] servers")
            nats = NatsDestination(
                self._nats_servers,
                address.path,
                security=self._nats_security,
                connect_timeout_s=config.connect_timeout_s,
                ack_timeout_s=config.ack_timeout_s,
            )
            return [_SharedSender(nats) for _ in range(config.connections)]  # one connection, publishes in parallel
        tls = None
        if address.scheme in ("mllps", "https"):
            tls = self._tls_context(self._config_dir / config.tls_ca_file if config.tls_ca_file else None)
        if address.scheme in ("http", "https"):
            token = ""
            if config.http_token_file:
                token = (self._config_dir / config.http_token_file).read_text(encoding="utf-8").strip()
            web = HttpDestination(
                address.path,
                connections=config.connections,
                tls=tls,
                token=token,
                connect_timeout_s=config.connect_timeout_s,
                ack_timeout_s=config.ack_timeout_s,
            )
            return [_SharedSender(web) for _ in range(config.connections)]  # one pool of connections
        return [
            _MLLPSender(
                MLLPConnection(
                    address.host,
                    address.port,
                    tls=tls,
                    connect_timeout_s=config.connect_timeout_s,
                    ack_timeout_s=config.ack_timeout_s,
                )
            )
            for _ in range(config.connections)
        ]

    async def _deliver(self, sender: _Sender) -> None:
        down_for = 0  # attempts in a row that found no connection
        while True:
            pending = await self._next()
            attempt = await self._attempt(sender, pending)
            self._settle(pending, attempt)
            if attempt.verdict is Verdict.UNREACHABLE:
                down_for += 1
                self._unreachable = f"{attempt.code}: {attempt.answer}"
                await anyio.sleep(self._backoff(down_for))
            else:
                down_for = 0
                self._unreachable = None

    async def _attempt(self, sender: _Sender, pending: Pending) -> Attempt:
        """One delivery: the payload made, sent, and the answer read (a span of its own when tracing)."""
        candidate = pending.candidate
        try:
            payload = self._payloads.make(candidate)
        except HL7Error as exc:  # the log has it; the transform cannot read it: an operator decides
            return Attempt(Verdict.REFUSED, "transform", f"not transformed: {exc.reason}")
        if payload is None:
            return Attempt(Verdict.DELIVERED, _NOTHING_TO_SEND)
        scope: contextlib.AbstractContextManager[trace.Span | None] = (
            _tracer.start_as_current_span(
                "vigil.route.deliver",
                # A child of the span that received the message: the delivery is part of its trace.
                context=propagate.extract({"traceparent": candidate.trace_parent}) if candidate.trace_parent else None,
                attributes={
                    "vigil.route": self.config.name,
                    "vigil.lane": candidate.lane.value,
                    "vigil.message_type": candidate.message_type,
                    "vigil.lsn": candidate.lsn,
                },
            )
            if self._tracing
            else contextlib.nullcontext()
        )
        self._in_flight += 1
        try:
            with scope as span:
                attempt = await sender.send(pending, payload)
                if span is not None:
                    span.set_attribute("vigil.outcome", attempt.verdict.value)
        finally:
            self._in_flight -= 1
        return attempt

    async def _next(self) -> Pending:
        """The plan's next message; waits for one (or for a retry's time) while there is none or the route is paused."""
        while True:
            now = anyio.current_time()
            if not self._ledger.paused:
                pending = self._plan.take(now)
                if pending is not None:
                    return pending
            work = self._work
            due = self._plan.next_due()
            self._idle += 1
            try:
                with anyio.move_on_after(max(0.0, due - now) if due is not None and not self._ledger.paused else 3600):
                    await work.wait()
            finally:
                self._idle -= 1
            if self._work is work and work.is_set():
                self._work = anyio.Event()

    def _settle(self, pending: Pending, attempt: Attempt) -> None:
        candidate = pending.candidate
        now = anyio.current_time()
        if attempt.verdict in (Verdict.DELIVERED, Verdict.REFUSED) and pending in self._replaying:
            self._replaying.discard(pending)
            if not self._replaying:
                self._replayed.set()
        if attempt.verdict is Verdict.DELIVERED:
            self._plan.done(pending)
            if self._reader_full and self._plan.bytes < self.config.pending_bytes_max:
                self._news.set()  # the reader waits for room to read further ahead
            self._ledger.settle(candidate.lsn)
            if attempt.code == _NOTHING_TO_SEND:
                self._nothing_to_send += 1
            else:
                self._count_delivery(candidate.lane, now - pending.seen_at, now)
            if pending.resend:
                self._resent += 1
        elif attempt.verdict is Verdict.REFUSED:
            hold = self.config.on_refused == "hold"
            self._plan.refuse(pending, hold=hold)
            self._ledger.refuse(
                Refusal(
                    candidate.lsn,
                    candidate.patient,
                    candidate.message_id,
                    candidate.message_type,
                    candidate.lane,
                    attempt.code,
                    attempt.answer,
                    utc_now(),
                    pending.attempts + 1,
                )
            )
            # No answer text in the log line: a downstream's error may quote the message.
            _log.warning("route.refused", route=self.config.name, lsn=candidate.lsn, code=attempt.code, hold=hold)
        else:
            self._retries += 1
            pending.resend = pending.resend or attempt.maybe_received
            if attempt.verdict is Verdict.UNREACHABLE:
                self._plan.retry(pending, now, count=False)  # another sender (or this one, reconnected) takes it
            else:
                self._plan.retry(pending, now + self._backoff(pending.attempts + 1))
        if self._idle:  # the patient's next message may be ready for another sender (this one takes its own next)
            self._work.set()

    def _backoff(self, attempts: int) -> float:
        """Capped exponential back-off with full jitter (AWS's "full jitter": spreads a herd of retries)."""
        cap = min(self.config.retry_max_s, self.config.retry_base_s * 2 ** min(attempts - 1, 30))
        return self._rng.uniform(cap / 2, cap)

    # -- the keeper ---------------------------------------------------------------------

    async def _keep(self) -> None:
        while True:
            await anyio.sleep(self.config.state_save_interval_s)
            if self._ledger.dirty:
                await anyio.to_thread.run_sync(self._save)

    def _too_old(self, now: float) -> bool:
        """An undelivered message older than `backlog_age_alert_s` (the alert itself is the alert watcher's)."""
        limit = self.config.backlog_age_alert_s
        return any(oldest is not None and now - oldest > limit for _count, oldest in self._plan.backlog().values())

    def _load(self) -> Ledger:
        """The saved ledger; a new route starts at the log's end (history goes by replay)."""
        self._state_dir.mkdir(parents=True, exist_ok=True)
        state = self._store.read()
        if state is None:
            ledger = Ledger.starting_at(self._log.last_lsn)
            self._store.write(ledger.state())
            return ledger
        return Ledger(state)

    def _save(self) -> None:
        self._store.write(self._ledger.state())

    # -- counting -----------------------------------------------------------------------

    def _count_delivery(self, lane: Lane, waited_s: float, now: float) -> None:
        self._delivered += 1
        self._per_lane[lane] += 1
        self._latency[lane].record_value(max(1, min(int(waited_s * 1_000_000), _HISTOGRAM_MAX_US)))
        second = int(now)
        if self._recent and self._recent[-1][0] == second:
            self._recent[-1] = (second, self._recent[-1][1] + 1)
        else:
            self._recent.append((second, 1))
            while self._recent and self._recent[0][0] < second - _RATE_WINDOW_S:
                self._recent.popleft()

    def _rate(self, now: float) -> float:
        """Deliveries per second over the last full seconds of the window."""
        whole = [n for s, n in self._recent if int(now) - _RATE_WINDOW_S <= s < int(now)]
        return round(sum(whole) / _RATE_WINDOW_S, 1) if whole else 0.0

    def _state(self) -> str:
        if self._ledger.paused:
            return "paused"
        if self._unreachable is not None:
            return f"unreachable: {self._unreachable}"
        if self._too_old(anyio.current_time()):
            return "backlog too old"
        return "delivering" if self._plan.size else "idle"
