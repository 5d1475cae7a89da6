"""A NATS JetStream subject as a destination: a message is delivered once the stream acknowledges it.

Each publish carries `Nats-Msg-Id` = the message's id, so a message sent
again (after a crash, a timeout, a replay) is dropped by the stream within
its duplicate window: downstream consumers see it once. The lane and the
LSN travel as headers (`Vigil-Lane`, `Vigil-Lsn`) for consumers that order
or filter by them; the payload is the message as logged (or rewritten).

One connection per route, made on first use with the node's `[nats]`
servers and credentials, and made again after it closes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import final

import anyio
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from opentelemetry import propagate

from engine.infra.nats_client import DRIVER_ERRORS, NatsUnavailableError, connect_once
from engine.routes.outcome import Attempt, Verdict
from engine.routes.payload import Payload
from engine.routes.selection import Candidate

__all__ = ["NatsDestination"]


@final
class NatsDestination:
    """Publishes to one subject through JetStream; what the stream says decides the verdict."""

    def __init__(
        self,
        servers: Sequence[str],
        subject: str,
        *,
        security: Callable[[], dict[str, object]],
        connect_timeout_s: float,
        ack_timeout_s: float,
    ) -> None:
        self._servers = servers
        self._subject = subject
        self._security = security
        self._connect_timeout_s = connect_timeout_s
        self._ack_timeout_s = ack_timeout_s
        self._client: Client | None = None
        self._connecting = anyio.Lock()  # the route's senders share one connection

    async def send(self, candidate: Candidate, payload: Payload) -> Attempt:
        client = await self._connected()
        if client is None:
            return Attempt(Verdict.UNREACHABLE, "connect", f"no NATS server answered at {', '.join(self._servers)}")
        headers = {
            "Nats-Msg-Id": candidate.message_id,
            "Vigil-Lane": candidate.lane.value,
            "Vigil-Lsn": str(candidate.lsn),
            "Content-Type": "application/fhir+json" if payload.fhir else "x-application/hl7-v2+er7",
        }
        propagate.inject(headers)  # the delivery span's traceparent, when tracing is on
        try:
            with anyio.fail_after(self._ack_timeout_s + 1):  # nats-py's own timeout first; this one if it hangs
                ack = await client.jetstream().publish(
                    self._subject, payload.body, timeout=self._ack_timeout_s, headers=headers
                )
        except nats.js.errors.NoStreamResponseError:
            return Attempt(Verdict.RETRY, "no-stream", f"no JetStream stream takes subject {self._subject}")
        except (TimeoutError, nats.errors.TimeoutError):
            return Attempt(Verdict.RETRY, "timeout", "the stream did not acknowledge in time", maybe_received=True)
        except nats.js.errors.APIError as exc:
            return Attempt(Verdict.RETRY, "refused", f"JetStream: {exc.description or type(exc).__name__}")
        except DRIVER_ERRORS as exc:
            await self.close()
            return Attempt(Verdict.UNREACHABLE, "broken", type(exc).__name__, maybe_received=True)
        return Attempt(Verdict.DELIVERED, "duplicate" if ack.duplicate else "stored")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and not client.is_closed:
            with anyio.CancelScope(shield=True):
                try:
                    await client.close()
                except DRIVER_ERRORS:
                    return  # closing a broken connection: nothing more to do

    async def _connected(self) -> Client | None:
        async with self._connecting:
            if self._client is not None and not self._client.is_closed:
                return self._client
            try:
                self._client = await connect_once(
                    self._servers, security=self._security(), deadline_s=self._connect_timeout_s
                )
            except NatsUnavailableError:
                return None
            return self._client
