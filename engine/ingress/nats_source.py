"""NATS subjects as a source: a JetStream pull consumer, or core NATS request/reply.

JetStream: messages are fetched a batch at a time and each is acked only
once the node has answered it (invariant 1): `ack` once durable, `term` once
refused (its bytes are in quarantine, so redelivering it would only
quarantine it again), `nak` with a delay on a temporary failure (disk full,
overload) so JetStream redelivers it. One batch is fetched while the one
before is answered, and no more: a full lane stops the pulling
(backpressure). A crash between the log commit and the ack means a
redelivery, which the log answers as a duplicate without a second append.

Core NATS is at most once on the wire: a message published with a reply
subject (a request) gets the node's results as its reply, so the requester
knows it is durable and can retry when it is not.

The trace context in the message headers (W3C `traceparent`) becomes the
parent of the node's spans for that message. nats-py runs on asyncio only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import anyio
import nats
import nats.errors
import nats.js.errors
import sniffio
import structlog
from anyio.streams.memory import MemoryObjectSendStream
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.client import JetStreamContext
from opentelemetry import propagate, trace

from engine.core.errors import ConfigError
from engine.core.outcome import Outcome
from engine.infra.config import NatsConfig, NatsSubjectConfig
from engine.infra.nats_client import DRIVER_ERRORS, connect_serving

__all__ = ["IngestMessages", "NatsSource"]

# Ingest these messages (each possibly holding several) from a source: one verdict and reply body per message.
IngestMessages = Callable[[Sequence[bytes], str], Awaitable[list[tuple[Outcome, bytes]]]]

_log = structlog.get_logger("vigil.nats")
_tracer = trace.get_tracer("vigil.nats")
_FETCH_WAIT_S = 1.0


class NatsSource:
    """Every configured subject, served until cancelled; reconnects on its own."""

    def __init__(
        self, config: NatsConfig, ingest: IngestMessages, *, name: str, security: dict[str, object] | None = None
    ) -> None:
        self._config = config
        self._ingest = ingest
        self._name = name
        self._security = security or {}  # credentials and TLS (engine.infra.tls.nats_security)
        self.state = "starting"

    async def run(self) -> None:
        """Connect (retrying while the broker is away), then serve every subject."""
        if sniffio.current_async_library() != "asyncio":
            raise ConfigError("nats: NATS sources need the asyncio backend (nats-py is asyncio only)")
        client = await connect_serving(
            self._config.servers,
            name=self._name,
            security=self._security,
            log=_log,
            events="nats",
            on_state=self._set_state,
        )
        try:
            async with anyio.create_task_group() as tg:
                for subject in self._config.subjects:
                    tg.start_soon(self._serve_subject, client, subject)
                self.state = "connected"
        finally:
            self.state = "stopped"
            with anyio.move_on_after(2, shield=True):
                await client.close()

    def _set_state(self, state: str) -> None:
        self.state = state

    async def _serve_subject(self, client: Client, subject: NatsSubjectConfig) -> None:
        if subject.mode == "jetstream":
            await self._pull(client, subject)
        else:
            await self._subscribe(client, subject)

    async def _pull(self, client: Client, subject: NatsSubjectConfig) -> None:
        """A durable pull consumer: fetch a batch, answer it, ack each message by its verdict."""
        js = client.jetstream()
        try:
            consumer = await js.pull_subscribe(
                subject.subject,
                durable=subject.durable,
                stream=subject.stream or None,
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=self._config.ack_wait_s),
            )
        except nats.js.errors.NotFoundError:
            raise ConfigError(f"nats: stream {subject.stream!r} for subject {subject.subject!r} not found") from None
        source = f"nats:{subject.subject}"
        _log.info("nats.consuming", subject=subject.subject, durable=subject.durable)
        # One batch fetched while the one before is answered: the fetch's round trip no
        # longer leaves the node idle. An unbuffered hand-off keeps it to one batch ahead.
        send, receive = anyio.create_memory_object_stream[list[Msg]](0)
        async with anyio.create_task_group() as tg, receive:
            tg.start_soon(self._fetch, consumer, send)
            async for batch in receive:
                verdicts = await self._answer(batch, source)
                for message, (verdict, _reply) in zip(batch, verdicts, strict=True):
                    await _settle(message, verdict, self._config.redeliver_delay_s)

    async def _fetch(
        self, consumer: JetStreamContext.PullSubscription, send: MemoryObjectSendStream[list[Msg]]
    ) -> None:
        """Batches from the pull consumer, handed over one at a time."""
        async with send:
            while True:
                try:
                    batch = await consumer.fetch(self._config.fetch_messages_max, timeout=_FETCH_WAIT_S)
                except TimeoutError:
                    # Nothing to fetch in time. Builtin: nats-py raises its own subclass, or a bare
                    # asyncio.TimeoutError when the deadline runs out between its two pull requests.
                    continue
                except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
                    await anyio.sleep(_FETCH_WAIT_S)
                    continue
                await send.send(batch)

    async def _subscribe(self, client: Client, subject: NatsSubjectConfig) -> None:
        """Core NATS: one message at a time, in arrival order; a request gets the results as its reply."""
        subscription = await client.subscribe(subject.subject)
        source = f"nats:{subject.subject}"
        _log.info("nats.subscribed", subject=subject.subject)
        async for message in subscription.messages:
            ((_verdict, reply),) = await self._answer([message], source)
            if message.reply:
                await message.respond(reply)

    async def _answer(self, batch: Sequence[Msg], source: str) -> list[tuple[Outcome, bytes]]:
        # One batch shares a span; a sender's trace context (first message's) is its parent.
        parent = propagate.extract(dict(batch[0].headers or {})) if batch else None
        with _tracer.start_as_current_span("vigil.nats.batch", context=parent):
            return await self._ingest([m.data for m in batch], source)


async def _settle(message: Msg, verdict: Outcome, redeliver_delay_s: float) -> None:
    try:
        if verdict is Outcome.ACCEPTED:
            await message.ack()
        elif verdict is Outcome.REJECTED:
            await message.term()
        else:
            await message.nak(delay=redeliver_delay_s)
    except DRIVER_ERRORS as exc:
        # Not acked: JetStream redelivers it, and the log answers the redelivery as a duplicate.
        _log.warning("nats.ack_failed", error=type(exc).__name__)
