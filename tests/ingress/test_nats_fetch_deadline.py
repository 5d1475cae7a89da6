"""A JetStream fetch whose deadline runs out inside the driver: the NATS source fetches again, it does not fail.

nats-py raises a bare `asyncio.TimeoutError` (not its own `nats.errors.TimeoutError`)
when a fetch's deadline is spent between its two pull requests, which a busy
event loop makes likely. Found under bench_isolation's floods, where the source
failed, was restarted by its supervisor, and its JetStream batch was redelivered.

Here a real server and the real driver; the driver's first fetches raise what it
raises at that point. Injected at the fetch, not through the driver's clock: that
point is reached only when the server's answer to the first pull request beats the
driver's own timer for the same deadline, a race a loaded machine loses every time.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest
from nats.aio.msg import Msg
from nats.js.api import StreamConfig
from nats.js.client import JetStreamContext

from engine.core.outcome import Outcome
from engine.infra.config import NatsConfig, NatsSubjectConfig
from engine.ingress.nats_source import NatsSource
from tests.harness.nats_server import nats_server

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

_SPENT = 3  # fetches whose deadline the driver finds spent


def test_a_fetch_deadline_spent_inside_the_driver_is_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spent = 0
    real = JetStreamContext.PullSubscription.fetch
    events: dict[str, anyio.Event] = {}  # made on the scenario's loop

    async def fetch(self: JetStreamContext.PullSubscription, *args: Any, **kwargs: Any) -> list[Msg]:
        nonlocal spent
        if spent < _SPENT:
            spent += 1
            if spent == _SPENT:
                events["spent"].set()
            raise TimeoutError  # bare, as nats-py raises it when the deadline runs out between requests
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(JetStreamContext.PullSubscription, "fetch", fetch)
    taken: list[bytes] = []

    async def ingest(messages: list[bytes], _source: str) -> list[tuple[Outcome, bytes]]:
        taken.extend(messages)
        events["arrived"].set()
        return [(Outcome.ACCEPTED, b"")] * len(messages)

    async def scenario(url: str) -> None:
        events.update(spent=anyio.Event(), arrived=anyio.Event())
        client = await nats.connect(url)
        try:
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
        finally:
            await client.close()  # a failure here must not leave a live client to the next test
        assert taken == [b"after the spent deadlines"]

    with nats_server(tmp_path / "nats") as url:
        anyio.run(scenario, url, backend="asyncio")
