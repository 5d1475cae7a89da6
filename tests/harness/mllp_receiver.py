"""A downstream system nobody here wrote: python-hl7's asyncio MLLP server, in a process of its own.

Run as `python -m tests.harness.mllp_receiver --port 0 --record FILE --control FILE`.
It prints `listening on PORT` once bound, then answers every message with
an ACK made by python-hl7 (`Message.create_ack`). Before each answer it
appends a line to the record file (received time, MSH-10, MSH-5, the
message's bytes in base64) and flushes it, so the record holds at least
every message the sender got an AA for.

What it answers is read from the control file (JSON) before each message,
so a test changes its behaviour while it runs:
`{"mode": "AA" | "AE" | "stall" | "close", "refuse": [control ids answered AR]}`.

`Receiver` is the test side: it starts the process, reads the record back,
changes the mode, and kills it (SIGKILL) to play a downstream outage.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any, final

import hl7
from hl7.mllp import start_hl7_server

from tests.harness.downstream_process import DownstreamProcess

__all__ = ["Received", "Receiver"]


@final
class Received:
    """One message as the receiver recorded it."""

    __slots__ = ("at", "control_id", "raw", "receiver_field")

    def __init__(self, at: float, control_id: str, receiver_field: str, raw: bytes) -> None:
        self.at = at
        self.control_id = control_id
        self.receiver_field = receiver_field
        self.raw = raw


@final
class Receiver(DownstreamProcess):
    """The receiver process, from the test's side."""

    def __init__(self, directory: Path, port: int = 0) -> None:
        self.directory = directory
        super().__init__(
            "tests.harness.mllp_receiver", directory / "received.ndjson", directory / "control.json", "AA", port
        )
        self._offset = 0
        self._seen: list[Received] = []

    def received(self) -> list[Received]:
        """Every message recorded so far, in arrival order (read on from where the last call stopped)."""
        if not self.record.exists():
            return list(self._seen)
        with self.record.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            doc = json.loads(line)
            self._seen.append(Received(doc["at"], doc["control_id"], doc["msh5"], base64.b64decode(doc["raw"])))
        return list(self._seen)

    def wait_for(self, count: int, timeout_s: float = 60.0) -> list[Received]:
        """The record once it holds `count` distinct control ids (a test's wait, polled)."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.received()
            if len({r.control_id for r in got}) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.02)


def _control(path: Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"mode": "AA", "refuse": []}
    return doc


async def _serve(port: int, record: Path, control: Path) -> None:
    out = record.open("a")

    async def client(reader: Any, writer: Any) -> None:
        try:
            while True:
                raw = await reader.readblock()
                message = hl7.parse(raw.decode("utf-8", errors="replace"))
                msh = message.segment("MSH")
                control_id = str(msh(10))
                settings = _control(control)
                mode = settings["mode"]
                if mode == "stall":
                    await asyncio.sleep(3600)
                if mode == "close":
                    writer.close()
                    return
                code = "AR" if control_id in settings["refuse"] else mode
                if code == "AA":
                    line = {"at": time.time(), "control_id": control_id, "msh5": str(msh(5))}
                    out.write(json.dumps({**line, "raw": base64.b64encode(raw).decode()}) + "\n")
                    out.flush()
                writer.writeblock(str(message.create_ack(code)).encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await start_hl7_server(client, "127.0.0.1", port)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--control", type=Path, required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(_serve(args.port, args.record, args.control))


if __name__ == "__main__":
    main()
