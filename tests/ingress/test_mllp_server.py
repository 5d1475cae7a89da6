"""The MLLP listener's own guarantees, over real loopback sockets: order, half-close, idleness, limits, a peer
that never reads. (The node's answers through it are tested end to end in test_node.py.)"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from structlog.testing import capture_logs

from engine.core.errors import FramingError
from engine.core.mllp import Frame, MLLPDecoder, frame
from engine.infra.config import MLLPConfig
from engine.ingress.mllp_listener import MLLPServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """The listener is built on asyncio's protocols: the node runs on anyio's asyncio backend."""
    return "asyncio"


class Answers:
    """What the listener asked to answer, and the answer: the payload reversed (or padded, to fill buffers)."""

    def __init__(self, *, delay_s: float = 0.0, pad: int = 0) -> None:
        self.asked: list[bytes] = []
        self.delay_s = delay_s
        self.pad = pad

    async def answer(self, payload: bytes, _source: str) -> bytes:
        self.asked.append(payload)
        if self.delay_s:
            await anyio.sleep(self.delay_s)
        return b"ACK " + payload[::-1] + b" " * self.pad

    def refuse(self, error: FramingError, _source: str) -> bytes | None:
        return b"NAK " + error.reason.encode()


@asynccontextmanager
async def listening(answers: Answers, **limits: float) -> AsyncIterator[int]:
    config = MLLPConfig(**limits)  # type: ignore[arg-type]
    server = MLLPServer(config, 4096, answers.answer, answers.refuse)
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        yield port
        tg.cancel_scope.cancel()


async def _replies(stream: anyio.abc.ByteStream, count: int) -> list[bytes]:
    decoder = MLLPDecoder(1 << 20)
    got: list[bytes] = []
    with anyio.fail_after(10):
        while len(got) < count:
            got.extend(i.payload for i in decoder.feed(await stream.receive()) if isinstance(i, Frame))
    return got


async def test_frames_sent_together_are_answered_one_at_a_time_in_order() -> None:
    answers = Answers()
    async with listening(answers) as port, await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"".join(frame(b"m%d" % i) for i in range(20)))
        assert await _replies(stream, 20) == [b"ACK " + (b"m%d" % i)[::-1] for i in range(20)]
    assert answers.asked == [b"m%d" % i for i in range(20)]


async def test_a_half_closed_peer_still_gets_every_answer() -> None:
    """A sender that sends, then closes its side, is answered before the connection ends."""
    answers = Answers(delay_s=0.05)
    async with listening(answers) as port, await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(frame(b"a") + frame(b"b") + frame(b"c"))
        await stream.send_eof()
        assert await _replies(stream, 3) == [b"ACK a", b"ACK b", b"ACK c"]
        with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await stream.receive()


async def test_an_idle_connection_is_closed_but_never_while_it_is_being_answered() -> None:
    answers = Answers(delay_s=0.6)  # longer than the idle timeout: the answer still comes
    async with listening(answers, idle_timeout_s=0.3) as port, await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(frame(b"slow"))
        assert await _replies(stream, 1) == [b"ACK wols"]
        started = time.monotonic()
        with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await stream.receive()
        assert 0.2 <= time.monotonic() - started < 3


async def test_the_connection_past_connections_max_is_closed_and_the_others_served() -> None:
    answers = Answers()
    async with listening(answers, connections_max=2) as port:
        first = await anyio.connect_tcp("127.0.0.1", port)
        second = await anyio.connect_tcp("127.0.0.1", port)
        await first.send(frame(b"1"))
        await second.send(frame(b"2"))
        assert await _replies(first, 1) == [b"ACK 1"]
        assert await _replies(second, 1) == [b"ACK 2"]
        async with await anyio.connect_tcp("127.0.0.1", port) as third:
            with contextlib.suppress(anyio.BrokenResourceError):  # closed already, or about to be
                await third.send(frame(b"3"))
            with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await third.receive()
        await first.aclose()  # a slot frees: a new connection is served again
        async with await anyio.connect_tcp("127.0.0.1", port) as fourth:
            await fourth.send(frame(b"4"))
            assert await _replies(fourth, 1) == [b"ACK 4"]
        await second.aclose()
    assert b"3" not in answers.asked


async def test_a_peer_that_never_reads_its_answers_is_not_read_either() -> None:
    """Frames keep coming, ACKs are never read: the listener stops answering (and reading) once the
    unread ACKs fill the buffers, instead of holding them all; another peer is still served at once."""
    answers = Answers(pad=60_000)
    async with listening(answers) as port:
        hog = socket.create_connection(("127.0.0.1", port))
        hog.setblocking(False)
        burst = frame(b"x") * 1000
        sent = 0
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                sent += hog.send(burst)
            except BlockingIOError:
                await anyio.sleep(0.01)
        asked = len(answers.asked)
        await anyio.sleep(0.5)
        assert len(answers.asked) == asked  # not read any further: the answers stopped
        assert asked < sent // len(frame(b"x"))
        async with await anyio.connect_tcp("127.0.0.1", port) as other:
            await other.send(frame(b"hi"))
            with anyio.fail_after(2):
                assert (await _replies(other, 1))[0].startswith(b"ACK ih")
        hog.close()


async def test_framing_errors_are_answered_in_their_turn() -> None:
    answers = Answers()
    async with listening(answers) as port, await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(frame(b"ok") + b"\x0b" + b"y" * 5000 + b"\x1c\r" + frame(b"after"))
        replies = await _replies(stream, 3)
    assert replies[0] == b"ACK ko"
    assert replies[1].startswith(b"NAK ")
    assert replies[2] == b"ACK retfa"


async def _closed_within(stream: anyio.abc.ByteStream, seconds: float) -> float:
    """How long until the listener closed `stream` (failing past `seconds`)."""
    started = time.monotonic()
    with anyio.fail_after(seconds), contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
        while True:
            await stream.receive()
    return time.monotonic() - started


async def test_a_frame_that_trickles_is_closed_at_its_deadline_and_a_slow_but_steady_one_completes() -> None:
    """A start block then a byte every 0.1 s: closed at about frame_timeout_s; 2 KB at 4 KB/s: answered."""
    answers = Answers()
    async with listening(answers, frame_timeout_s=0.5, frame_bytes_per_s_min=1000) as port:
        with capture_logs() as logs:
            async with await anyio.connect_tcp("127.0.0.1", port) as trickler:
                await trickler.send(b"\x0bMSH")

                async def trickle() -> None:
                    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                        while True:
                            await anyio.sleep(0.1)
                            await trickler.send(b"x")

                async with anyio.create_task_group() as tg:
                    tg.start_soon(trickle)
                    assert 0.3 < await _closed_within(trickler, 5) < 2
                    tg.cancel_scope.cancel()
        [refused] = [line for line in logs if line["event"] == "mllp.frame_too_slow"]
        assert refused["peer"].startswith("mllp:127.0.0.1:")
        async with await anyio.connect_tcp("127.0.0.1", port) as steady:
            payload = b"MSH" + b"y" * 2000
            await steady.send(b"\x0b")
            for start in range(0, len(payload), 200):  # 200 bytes every 0.05 s: 4 KB/s
                await steady.send(payload[start : start + 200])
                await anyio.sleep(0.05)
            await steady.send(b"\x1c\r")
            assert await _replies(steady, 1) == [b"ACK " + payload[::-1]]


async def test_stray_bytes_between_frames_do_not_keep_a_connection_open() -> None:
    """Whitespace every 0.1 s begins no message: the connection is closed as idle all the same."""
    answers = Answers()
    async with listening(answers, idle_timeout_s=0.3) as port, await anyio.connect_tcp("127.0.0.1", port) as stream:

        async def drip() -> None:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                while True:
                    await stream.send(b"\r")
                    await anyio.sleep(0.1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(drip)
            assert await _closed_within(stream, 5) < 2
            tg.cancel_scope.cancel()


async def test_one_address_cannot_take_every_slot() -> None:
    """Past connections_per_address_max, 127.0.0.1 is refused (the line names it); 127.0.0.2 is served."""
    answers = Answers()
    async with listening(answers, connections_max=10, connections_per_address_max=3) as port:
        with capture_logs() as logs:
            hogs = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(3)]
            async with await anyio.connect_tcp("127.0.0.1", port) as fourth:
                assert await _closed_within(fourth, 5) < 5
            async with await anyio.connect_tcp("127.0.0.1", port, local_host="127.0.0.2") as other:
                await other.send(frame(b"in"))
                assert await _replies(other, 1) == [b"ACK ni"]
            for hog in hogs:
                await hog.aclose()
        [refused] = [line for line in logs if line["event"] == "mllp.connection_refused"]
        assert refused["peer"].startswith("mllp:127.0.0.1:")
        assert "connections_per_address_max" in refused["reason"]


async def test_slots_are_free_again_as_soon_as_their_peers_close() -> None:
    """1,000 quick connections one after another, each one message: none refused with only 4 slots."""
    answers = Answers()
    async with listening(answers, connections_max=4, connections_per_address_max=4) as port:
        with capture_logs() as logs:
            for n in range(1000):
                async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                    await stream.send(frame(b"%d" % n))
                    assert await _replies(stream, 1) == [b"ACK " + (b"%d" % n)[::-1]]
        assert [line for line in logs if line["event"] == "mllp.connection_refused"] == []
