"""One MLLP connection to a downstream system: send a message, wait for its ACK, say what came of it."""

from __future__ import annotations

import ssl
from typing import final

import anyio
from anyio.abc import ByteStream

from engine.core.errors import HeaderError
from engine.core.hl7 import read_header
from engine.core.mllp import Frame, MLLPDecoder, frame
from engine.routes.outcome import Attempt, Verdict, read_answer

__all__ = ["MLLPConnection"]

_READ_BYTES = 65536
_CONNECTION_ERRORS = (OSError, anyio.BrokenResourceError, anyio.EndOfStream, anyio.ClosedResourceError, ssl.SSLError)


@final
class MLLPConnection:
    """A connection made on first use and made again after it breaks; one message at a time on it."""

    def __init__(
        self, host: str, port: int, *, tls: ssl.SSLContext | None, connect_timeout_s: float, ack_timeout_s: float
    ) -> None:
        self._host = host
        self._port = port
        self._tls = tls
        self._connect_timeout_s = connect_timeout_s
        self._ack_timeout_s = ack_timeout_s
        self._stream: ByteStream | None = None
        self._decoder = MLLPDecoder()

    @property
    def connected(self) -> bool:
        return self._stream is not None

    async def send(self, payload: bytes) -> Attempt:
        """Deliver one message and read its ACK.

        Never raises for the network: a connection that cannot be made or
        breaks is `UNREACHABLE`; an ACK that does not come in time closes the
        connection (a late ACK must not be read as the next message's) and is `RETRY`.
        """
        if self._stream is None:
            failure = await self._connect()
            if failure is not None:
                return failure
        assert self._stream is not None
        try:
            control_id = read_header(payload).get(10)
        except HeaderError:
            control_id = b""  # a FHIR document over MLLP: its ACK cannot be matched by control id
        sent = False
        try:
            with anyio.fail_after(self._ack_timeout_s):
                await self._stream.send(frame(payload))
                sent = True
                answer = await self._answer()
        except TimeoutError:
            await self.close()
            return Attempt(Verdict.RETRY, "timeout", f"no ACK within {self._ack_timeout_s:g} s", maybe_received=sent)
        except _CONNECTION_ERRORS as exc:
            await self.close()
            return Attempt(Verdict.UNREACHABLE, "broken", _reason(exc), maybe_received=sent)
        attempt = read_answer(answer, control_id)
        if attempt.code in ("unreadable", "out-of-step"):
            await self.close()
        return attempt

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        self._decoder = MLLPDecoder()
        if stream is not None:
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    async def _connect(self) -> Attempt | None:
        try:
            with anyio.fail_after(self._connect_timeout_s):
                if self._tls is None:
                    self._stream = await anyio.connect_tcp(self._host, self._port)
                else:
                    self._stream = await anyio.connect_tcp(
                        self._host, self._port, ssl_context=self._tls, tls_standard_compatible=False
                    )
        except TimeoutError:
            return Attempt(Verdict.UNREACHABLE, "connect", f"no connection within {self._connect_timeout_s:g} s")
        except _CONNECTION_ERRORS as exc:
            return Attempt(Verdict.UNREACHABLE, "connect", _reason(exc))
        return None

    async def _answer(self) -> bytes:
        assert self._stream is not None
        while True:
            data = await self._stream.receive(_READ_BYTES)
            for item in self._decoder.feed(data):
                if isinstance(item, Frame):
                    return item.payload


def _reason(exc: BaseException) -> str:
    """A network error in a few words (never a message's content: there is none in these)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
