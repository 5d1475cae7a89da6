"""A child process for the crash test: appends forever, printing each acknowledged id.

Usage: python -m tests.harness.wal_child DIRECTORY RUN SEED

Eight concurrent writers append envelopes (1 to 3 per append, all lanes) to
the log in DIRECTORY; after each append returns, the child prints
`ACK <message id>` and flushes. The parent kills it with SIGKILL at a random
moment and checks that every printed id is in the log, once, byte-exact.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import anyio

from engine.core.model import Lane
from engine.infra.config import WalConfig
from engine.infra.logging_setup import configure_logging
from engine.wal import open_wal
from tests.harness.helpers import envelope

LANES = (Lane.CRITICAL, Lane.STANDARD, Lane.BATCH)


async def main(directory: Path, run: int, seed: int) -> None:
    config = WalConfig(segment_bytes_max=256 * 1024, checkpoint_records_interval=200, commit_delay_ms=1)
    rng = random.Random(seed)
    counter = iter(range(run * 1_000_000, (run + 1) * 1_000_000))
    out = sys.stdout

    async def writer() -> None:
        while True:
            batch = [
                envelope(next(counter), LANES[rng.randrange(3)], size=rng.randrange(50, 3000))
                for _ in range(rng.randint(1, 3))
            ]
            await wal.append(batch)
            out.write("".join(f"ACK {e.message_id}\n" for e in batch))
            out.flush()

    async with open_wal(directory, config) as wal, anyio.create_task_group() as tg:
        out.write("READY\n")
        out.flush()
        for _ in range(8):
            tg.start_soon(writer)


if __name__ == "__main__":
    configure_logging("warning")
    anyio.run(main, Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
