"""The demo's downstream system: an EHR's MLLP interface that takes a moment per message and answers AA.

It stands where a hospital's EHR would, at the end of the demo node's
route, in a process of its own (as a real EHR would be: its work is not the
node's). It prints its port, then one line per message it receives
(`MSH-10 TAB wall-clock time`), so the demo can show which messages a
backlog held back and which it did not. It stops when its stdin closes.

`Downstream` is the demo's side: it starts the process and collects the lines.
"""

from __future__ import annotations

import sys
import time
from typing import final

import anyio
from anyio.abc import ByteStream, SocketAttribute, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

from engine.core.errors import HeaderError
from engine.core.hl7 import AckContext, build_ack, read_header
from engine.core.mllp import Frame, MLLPDecoder, frame
from engine.core.outcome import Outcome

__all__ = ["Downstream"]

_LINE_BYTES_MAX = 4096  # one line of the downstream process: a control id and a time


@final
class Downstream:
    """The stand-in EHR's process; `arrived` maps each MSH-10 it received to when (wall clock)."""

    def __init__(self, delay_s: float) -> None:
        self._delay_s = delay_s
        self.arrived: dict[str, float] = {}

    async def run(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the process, report its port, and note its arrivals until cancelled (the process goes with it)."""
        command = [sys.executable, "-m", "engine.cli.demo_downstream", str(self._delay_s)]
        process = await anyio.open_process(command)
        try:
            assert process.stdout is not None
            lines = BufferedByteReceiveStream(process.stdout)
            task_status.started(int(await lines.receive_until(b"\n", _LINE_BYTES_MAX)))
            while True:
                control_id, _, at = (await lines.receive_until(b"\n", _LINE_BYTES_MAX)).decode().partition("\t")
                self.arrived.setdefault(control_id, float(at))
        finally:
            with anyio.CancelScope(shield=True):
                process.kill()
                await process.aclose()


async def _serve(delay_s: float) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    out = sys.stdout

    async def connection(stream: ByteStream) -> None:
        decoder = MLLPDecoder()
        async with stream:
            while True:
                try:
                    data = await stream.receive(65536)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                for item in decoder.feed(data):
                    if isinstance(item, Frame):
                        control_id = _control_id(item.payload)
                        out.write(f"{control_id}\t{time.time()}\n")
                        out.flush()
                        await anyio.sleep(delay_s)
                        ack = build_ack(
                            AckContext.from_raw(item.payload),
                            Outcome.ACCEPTED,
                            control_id=f"A{control_id}",
                            timestamp=time.strftime("%Y%m%d%H%M%S"),
                        )
                        await stream.send(frame(ack.to_bytes()))

    async with listener, anyio.create_task_group() as tg:
        out.write(f"{listener.extra(SocketAttribute.local_port)}\n")  # noqa: S610 -- anyio, not Django
        out.flush()
        tg.start_soon(listener.serve, connection)
        await anyio.to_thread.run_sync(_until_stdin_closes)
        tg.cancel_scope.cancel()


def _until_stdin_closes() -> None:
    sys.stdin.buffer.read()  # the demo holds our stdin open while it runs


def _control_id(payload: bytes) -> str:
    try:
        value = read_header(payload).get(10).decode("latin-1")
    except HeaderError:
        return ""
    return value.replace("\t", " ").replace("\n", " ")  # one line per message, whatever MSH-10 holds


if __name__ == "__main__":
    anyio.run(_serve, float(sys.argv[1]))
