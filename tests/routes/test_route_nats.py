"""A route to a NATS JetStream subject, on a real nats-server: stored once per message id, resent or not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from engine.core.model import Lane
from engine.infra.route_config import RouteConfig
from engine.infra.tls import client_context
from engine.routes import Route
from engine.wal import open_wal
from tests.harness.nats_server import nats_server
from tests.harness.route_helpers import route_envelope, running, until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """nats-py is an asyncio library (so is the node wherever NATS is in use)."""
    return "asyncio"


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with nats_server(tmp_path / "nats") as address:
        yield address


async def _stored(url: str) -> list[tuple[str, str, str]]:
    """(Nats-Msg-Id, Vigil-Lane, MSH-10) of every message in the stream, in stream order."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        info = await js.stream_info("OUT")
        out = []
        for seq in range(1, info.state.last_seq + 1):
            msg = await js.get_msg("OUT", seq)
            headers = msg.headers or {}
            control_id = msg.data.split(b"|", 10)[9].decode()
            out.append((headers["Nats-Msg-Id"], headers["Vigil-Lane"], control_id))
        return out
    finally:
        await client.close()


async def _add_stream(url: str) -> None:
    client = await nats.connect(url)
    try:
        await client.jetstream().add_stream(StreamConfig(name="OUT", subjects=["ehr.out"]))
    finally:
        await client.close()


async def test_a_nats_route_waits_for_its_stream_and_a_replay_is_stored_once(tmp_path: Path, url: str) -> None:
    config = RouteConfig(
        name="bus", destination="nats:ehr.out", connections=3, retry_base_s=0.05, retry_max_s=0.2, ack_timeout_s=2
    )
    async with open_wal(tmp_path / "wal") as wal:
        route = Route(
            config, wal, tmp_path / "route", config_dir=tmp_path, tls_context=client_context, nats_servers=[url]
        )
        async with running(route):
            await wal.append(
                [route_envelope(i, f"H|P{i % 4}", Lane.CRITICAL if i == 7 else Lane.STANDARD) for i in range(20)]
            )
            route.notify()
            await until(lambda: route.statistics().retries >= 1, 10)  # no stream takes the subject yet
            assert route.statistics().delivered == 0
            await _add_stream(url)
            await until(lambda: route.statistics().delivered == 20, 20)
            route.replay(1)
            await until(lambda: route.statistics().replays == 0 and route.statistics().delivered == 40, 20)
    stored = await _stored(url)
    assert len(stored) == 20  # the replay's copies were dropped by the stream (same Nats-Msg-Id)
    assert {s[0] for s in stored} == {f"hl7:LAB|GENHOSP|C{i:06d}" for i in range(20)}
    assert ("hl7:LAB|GENHOSP|C000007", "critical", "C000007") in stored
    for patient in range(4):
        mine = [s[2] for s in stored if int(s[2][1:]) % 4 == patient]
        assert mine == sorted(mine)
