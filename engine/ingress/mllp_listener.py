"""The MLLP listener: connections on asyncio's protocols, one task per connection answering in order.

A connection is an `asyncio.Protocol`: bytes go straight from the socket
into the connection's MLLP decoder, and ACKs straight to its transport. A
byte stream with its own checkpoints and a pause and resume of reading (two
`epoll_ctl` calls) around every receive cost about 40 µs of the node's CPU
per message, measured against this on 32 connections.

Each connection's frames are answered by one task, in order, one at a time,
as MLLP senders expect. The bounds that keep one slow or hostile peer from
hurting the others:

- a frame is at most `message_bytes_max` (the decoder refuses a longer one
  and skips its bytes, never buffering them);
- at most `_QUEUED_FRAMES_MAX` frames wait for their turn; past that the
  connection is not read (backpressure reaches the peer through TCP);
- a peer that does not read its ACKs stops being read once its unsent ACKs
  pass the transport's high-water mark;
- a connection idle for `idle_timeout_s` (no message received, nothing being
  answered: a stray byte does not count) is closed;
- a frame, once its start block came, must end within `frame_timeout_s`
  plus a second per `frame_bytes_per_s_min` bytes received (a minimum data
  rate): a peer that opens a frame and trickles a byte now and then is closed;
- at most `connections_max` are served at once, and at most
  `connections_per_address_max` from one address (so a host that opens
  hundreds of connections cannot lock every other sender out); the one past
  either is closed at once, the log line naming the peer; a slot is free
  again as soon as its connection is lost;
- a TLS handshake must end within `tls_handshake_timeout_s`.

The node runs on anyio's asyncio backend (nats-py and asyncpg need asyncio);
this listener is the one place where the node speaks to asyncio directly.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from typing import final

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from engine.core.errors import FramingError
from engine.core.mllp import Frame, MLLPDecoder, frame
from engine.infra.config import MLLPConfig

__all__ = ["AnswerFrame", "MLLPServer", "RefuseFraming"]

_log = structlog.get_logger("vigil.mllp")

# A frame's payload and its source -> the ACK to send, or None (an empty frame: nothing was asked).
AnswerFrame = Callable[[bytes, str], Awaitable[bytes | None]]
# A framing error and its source -> the NAK to send, or None (junk between frames).
RefuseFraming = Callable[[FramingError, str], bytes | None]

_QUEUED_FRAMES_MAX = 16  # frames (or framing errors) waiting for their turn before reading stops


@final
class MLLPServer:
    """Serves MLLP on HOST:PORT until cancelled; `await tg.start(server.serve, host, port)` gives the port."""

    def __init__(
        self,
        config: MLLPConfig,
        message_bytes_max: int,
        answer: AnswerFrame,
        refuse: RefuseFraming,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.message_bytes_max = message_bytes_max
        self.answer = answer
        self.refuse = refuse
        self.tls = tls
        self.connections = 0
        self._per_address: dict[str, int] = {}
        self._tg: TaskGroup | None = None

    async def serve(self, host: str, port: int, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen, serve every connection, and on cancellation close the listener and every connection."""
        loop = asyncio.get_running_loop()
        servers: list[asyncio.Server] = []
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                # Each address of the host on its own (localhost may be ::1 and 127.0.0.1), all on
                # one port: port 0 takes the first address's free port for the others too.
                for family, address in await _addresses(loop, host, port):
                    server = await loop.create_server(
                        lambda: _Connection(self, loop),
                        address,
                        port,
                        family=family,
                        ssl=self.tls,
                        ssl_handshake_timeout=self.config.tls_handshake_timeout_s if self.tls else None,
                    )
                    servers.append(server)
                    port = port or server.sockets[0].getsockname()[1]
                task_status.started(port)
                await anyio.sleep_forever()
            finally:
                for server in servers:
                    server.close()  # stop accepting; the connections' tasks end with this group

    def start(self, connection: _Connection, address: str, peer: str) -> bool:
        """A new connection's turn-taking task, unless its slot (overall or for its address) is taken."""
        if self._tg is None:
            return False
        held = self._per_address.get(address, 0)
        if self.connections >= self.config.connections_max:
            reason = f"connections_max ({self.config.connections_max}) reached"
        elif held >= self.config.connections_per_address_max:
            reason = f"connections_per_address_max ({self.config.connections_per_address_max}) reached for its address"
        else:
            self.connections += 1
            self._per_address[address] = held + 1
            self._tg.start_soon(connection.run)
            return True
        _log.warning("mllp.connection_refused", peer=peer, reason=reason)
        return False

    def release(self, address: str) -> None:
        """A connection's slot, free again."""
        self.connections -= 1
        held = self._per_address.pop(address) - 1
        if held:
            self._per_address[address] = held


async def _addresses(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[tuple[int, str]]:
    """The distinct (family, address) pairs to listen on for `host`, in the resolver's order."""
    found = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return list(dict.fromkeys((family, str(sockaddr[0])) for family, _type, _proto, _name, sockaddr in found))


@final
class _Connection(asyncio.Protocol):
    """One peer: its decoder, the frames waiting for their answers, and the task that answers them."""

    def __init__(self, server: MLLPServer, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._decoder = MLLPDecoder(server.message_bytes_max)
        self._waiting: deque[Frame | FramingError] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None  # made while the peer is not reading its ACKs
        self._source = "mllp"
        self._address = ""
        self._held = False  # holds a slot of the server's (released once, when lost or done)
        self._reading = True
        self._busy = False
        self._ended = False  # the peer closed its side, or the connection is lost
        self._last = loop.time()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._frame_start = -1  # stream offset of the open frame being timed (-1: none)
        self._frame_began = 0.0
        self._frame_timer: asyncio.TimerHandle | None = None

    # -- asyncio's callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._source = f"mllp:{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "mllp"
        self._address = str(peer[0]) if isinstance(peer, tuple) else ""
        if not self._server.start(self, self._address, self._source):
            transport.abort()
            return
        self._held = True
        self._arm_idle(self._server.config.idle_timeout_s)

    def data_received(self, data: bytes) -> None:
        items = self._decoder.feed(data)
        if items:
            self._last = self._loop.time()
            self._waiting.extend(items)
        self._time_frame()
        if len(self._waiting) >= _QUEUED_FRAMES_MAX and self._reading and self._transport is not None:
            self._transport.pause_reading()  # resumed once the task has caught up
            self._reading = False
        self._poke()

    def eof_received(self) -> bool:
        self._ended = True
        self._poke()
        # Keep the transport open to answer the frames already received (TLS cannot half-close).
        return self._server.tls is None

    def connection_lost(self, exc: BaseException | None) -> None:  # noqa: ARG002 -- asyncio's signature
        self._ended = True
        for timer in (self._idle_timer, self._frame_timer):
            if timer is not None:
                timer.cancel()
        self._release()  # at once: a peer that reconnects at once finds its slot free
        _resolve(self._writable)
        self._poke()

    def pause_writing(self) -> None:
        self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        _resolve(self._writable)

    # -- the connection's task ---------------------------------------------------------

    async def run(self) -> None:
        """Answer each frame in order, one at a time; close the connection when done or cancelled."""
        transport = self._transport
        assert transport is not None
        try:
            while True:
                if not self._waiting:
                    if self._ended or transport.is_closing():
                        return
                    if not self._reading:
                        self._reading = True
                        transport.resume_reading()
                    self._wake = self._loop.create_future()
                    await self._wake
                    continue
                self._busy = True
                try:
                    reply = await self._answer(self._waiting.popleft())
                finally:
                    self._busy = False
                    self._last = self._loop.time()
                if reply is not None and not transport.is_closing():
                    transport.write(frame(reply))
                    if self._writable is not None:
                        await self._writable  # the peer is not reading its ACKs: neither do we read
                        self._writable = None
        finally:
            self._release()
            transport.close()

    async def _answer(self, item: Frame | FramingError) -> bytes | None:
        # A method of its own: the frame (megabytes, for a large message) is not kept
        # alive by the connection's loop while it waits for the next one.
        if isinstance(item, Frame):
            return await self._server.answer(item.payload, self._source)
        return self._server.refuse(item, self._source)

    def _poke(self) -> None:
        _resolve(self._wake)

    def _release(self) -> None:
        if self._held:
            self._held = False
            self._server.release(self._address)

    # -- a frame's deadline ------------------------------------------------------------------

    def _time_frame(self) -> None:
        """Start the clock when a frame begins, stop it when it ends."""
        opened = self._decoder.open_frame()
        if opened is None:
            if self._frame_timer is not None:
                self._frame_timer.cancel()
                self._frame_timer, self._frame_start = None, -1
            return
        if opened[0] != self._frame_start:  # a new frame (the last one may have ended in this read)
            if self._frame_timer is not None:
                self._frame_timer.cancel()
            self._frame_start, self._frame_began = opened[0], self._loop.time()
            self._frame_timer = self._loop.call_later(self._server.config.frame_timeout_s, self._check_frame)

    def _check_frame(self) -> None:
        """Close the connection if the open frame has taken longer than its bytes allow."""
        opened = self._decoder.open_frame()
        if opened is None or opened[0] != self._frame_start or self._transport is None:
            return
        config = self._server.config
        allowed_s = config.frame_timeout_s + opened[1] / config.frame_bytes_per_s_min
        left = self._frame_began + allowed_s - self._loop.time()
        if left > 0:
            self._frame_timer = self._loop.call_later(left, self._check_frame)
            return
        _log.warning(
            "mllp.frame_too_slow",
            peer=self._source,
            frame_bytes=opened[1],
            elapsed_s=round(self._loop.time() - self._frame_began, 1),
            reason="a frame must end within frame_timeout_s, plus 1 s per frame_bytes_per_s_min bytes",
        )
        self._transport.close()

    # -- idleness --------------------------------------------------------------------------

    def _arm_idle(self, after_s: float) -> None:
        self._idle_timer = self._loop.call_later(after_s, self._check_idle)

    def _check_idle(self) -> None:
        """Close the connection if nothing came and nothing was answered for idle_timeout_s."""
        if self._ended:
            return
        assert self._transport is not None  # armed once connected
        idle_s = self._server.config.idle_timeout_s
        left = self._last + idle_s - self._loop.time()
        if self._busy or self._waiting or self._frame_start >= 0:  # answering, or a frame's clock runs
            self._arm_idle(idle_s)
            return
        if left > 0:
            self._arm_idle(max(left, 0.05))
            return
        _log.info("mllp.idle_closed", source=self._source)
        self._transport.close()


def _resolve(waiter: asyncio.Future[None] | None) -> None:
    """Wake whoever awaits `waiter`, if anyone still does."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
