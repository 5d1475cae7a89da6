"""A JetStream fetch whose deadline runs out inside the driver: the NATS source fetches again, it does not fail.

nats-py raises a bare `asyncio.TimeoutError` (not its own `nats.errors.TimeoutError`)
when a fetch's deadline is spent between its two pull requests, which a busy
event loop makes likely. Found under bench_isolation's floods, where the source
failed, was restarted by its supervisor, and its JetStream batch was redelivered.
Here a real server and the real driver, with the driver's clock for that one
deadline made to have run out (as an injected clock would).
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import nats
import pytest
from nats.js.api import StreamConfig
from nats.js.client import JetStreamContext

from engine.core.outcome import Outcome
from engine.infra.config import NatsConfig, NatsSubjectConfig
from engine.ingress.nats_source import NatsSource
from tests.harness.nats_server import nats_server

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")


def test_a_fetch_deadline_spent_inside_the_driver_is_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spent = 0
    real = JetStreamContext._time_until
    events: dict[str, anyio.Event] = {}  # made on the scenario's loop

    def time_until(timeout: float | None, start_time: float) -> float | None:
        nonlocal spent
        if spent < 3:  # the first fetches: their deadline has run out before the lingering pull request
            spent += 1
            if spent == 3:
                events["spent"].set()
            return 0.0
        return real(timeout, start_time)

    monkeypatch.setattr(JetStreamContext, "_time_until", staticmethod(time_until))
    taken: list[bytes] = []

    async def ingest(messages: list[bytes], _source: str) -> list[tuple[Outcome, bytes]]:
        taken.extend(messages)
        events["arrived"].set()
        return [(Outcome.ACCEPTED, b"")] * len(messages)

    async def scenario(url: str) -> None:
        events.update(spent=anyio.Event(), arrived=anyio.Event())
        client = await nats.connect(url)
        js = client.jetstream()
        await js.add_stream(StreamConfig(name="HL7_IN", subjects=["hl7.in"]))
        config = NatsConfig(servers=(url,), subjects=(NatsSubjectConfig("hl7.in", stream="HL7_IN"),))
        source = NatsSource(config, ingest, name="test")
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(source.run)
                await events["spent"].wait()
                await js.publish("hl7.in", b"after the spent deadlines")
                await events["arrived"].wait()
                tg.cancel_scope.cancel()
        await client.close()
        assert taken == [b"after the spent deadlines"]

    with nats_server(tmp_path / "nats") as url:
        anyio.run(scenario, url, backend="asyncio")
