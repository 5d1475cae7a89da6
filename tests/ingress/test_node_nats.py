"""NATS subjects as a source, against a real `nats-server` with JetStream.

JetStream messages are acked only once durable (refused ones are terminated,
their bytes in quarantine); a node killed with SIGKILL while consuming loses
nothing and appends nothing twice; core NATS requests get the node's results
as the reply; a missing stream is one clear line.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest
from nats.js.api import StreamConfig

from engine.infra.config import Config, NatsConfig, NatsSubjectConfig
from engine.node import Node
from engine.wal.files import OSFiles
from engine.wal.quarantine import Quarantine
from tests.harness.helpers import hl7, oru
from tests.harness.nats_server import nats_server, until_consumed
from tests.harness.node_process import ROOT, VIGIL, log_ids, node

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

STREAM, SUBJECT = "HL7_IN", "hl7.in"


def message(n: int, patient: int = 0) -> bytes:
    msh = f"MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261124101500||ORU^R01^ORU_R01|NATS{n:06d}|P|2.5.1"
    pid = f"PID|1||MRN{patient:06d}^^^GENHOSP^MR||Doe^Jan||19700101|F"
    return hl7(msh, pid, "OBR|1|P1|F1|80048^BMP^CPT", "OBX|1|NM|2823-3^K^LN||4.1|mmol/L|3.5-5.1|N|||F")


BAD = hl7("MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|2026||ORU^R01|NATSBAD|P|2.5.1", "OBR|1|P|F|X")


async def _with_js(url: str, work: Callable[[Any], Awaitable[Any]]) -> Any:
    client = await nats.connect(url)
    try:
        return await work(client)
    finally:
        await client.close()


async def _make_stream(js: Any) -> None:
    await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT]))


async def _request(client: Any, payload: bytes) -> bytes:
    """A request, retried while the node has not subscribed yet (no responders: nothing was processed)."""
    while True:
        try:
            reply = await client.request(SUBJECT, payload, timeout=10)
        except nats.errors.NoRespondersError:
            await anyio.sleep(0.05)
            continue
        return bytes(reply.data)


def _config(url: str, mode: str = "jetstream", ack_wait_s: float = 30.0) -> Config:
    subject = NatsSubjectConfig(SUBJECT, mode=mode, stream=STREAM if mode == "jetstream" else "")  # type: ignore[arg-type]
    return Config(nats=NatsConfig(servers=(url,), subjects=(subject,), ack_wait_s=ack_wait_s))


def test_jetstream_messages_are_acked_once_durable_and_refused_ones_quarantined(tmp_path: Path) -> None:
    """A critical result, a routine one and a refused one: two in the log, one quarantined, none pending."""
    critical = oru("OBX|1|NM|2823-3^K^LN||6.9|mmol/L|3.5-5.1|HH|||F")
    with nats_server(tmp_path / "nats") as url:

        async def scenario() -> None:
            node_ = Node(_config(url), tmp_path / "data")

            async def publish(client: Any) -> None:
                js = client.jetstream()
                for payload in (critical, message(1), BAD):
                    await js.publish(SUBJECT, payload)

            await _with_js(url, lambda client: _make_stream(client.jetstream()))
            async with anyio.create_task_group() as tg:
                await tg.start(node_.run)
                await _with_js(url, publish)
                await until_consumed(url, STREAM, "vigil", 3)
                node_.stop()

        anyio.run(scenario, backend="asyncio")
    assert len(log_ids(tmp_path / "data")) == 2
    items = list(Quarantine(tmp_path / "data" / "quarantine", OSFiles()).items())
    assert len(items) == 1
    assert items[0].source == f"nats:{SUBJECT}"


def test_core_nats_request_gets_the_results_as_its_reply(tmp_path: Path) -> None:
    """A request is answered only after the append: accepted with its LSN; a bad one rejected with the reason."""
    with nats_server(tmp_path / "nats") as url:

        async def scenario() -> list[Any]:
            node_ = Node(_config(url, mode="core"), tmp_path / "data")
            replies = []
            async with anyio.create_task_group() as tg:
                await tg.start(node_.run)

                async def ask(client: Any) -> None:
                    with anyio.fail_after(30):
                        replies.extend([json.loads(await _request(client, p)) for p in (message(7), message(7), BAD)])

                await _with_js(url, ask)
                node_.stop()
            return replies

        replies = anyio.run(scenario, backend="asyncio")
    accepted, duplicate, rejected = (r[0] for r in replies)
    assert (accepted["outcome"], accepted["lsns"]) == ("accepted", [1])
    assert (duplicate["outcome"], duplicate["lsns"], duplicate["duplicate"]) == ("accepted", [1], True)
    assert rejected["outcome"] == "rejected"
    assert "PID" in json.dumps(rejected["error"])


def test_sigkill_while_consuming_jetstream_loses_nothing_and_appends_nothing_twice(tmp_path: Path) -> None:
    """Kill -9 a consuming node at random moments; afterwards every published message is in the log exactly once."""
    seed = int(os.environ.get("VIGIL_CRASH_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(seed)
    total = 6000  # more than a node drains in the longest wait before a kill
    progress = []
    data = tmp_path / "data"
    with nats_server(tmp_path / "nats") as url:
        config = tmp_path / "vigil.toml"
        config.write_text(
            f'[nats]\nservers = ["{url}"]\nack_wait_s = 1.0\nfetch_messages_max = 64\n'
            f'[[nats.subjects]]\nsubject = "{SUBJECT}"\nstream = "{STREAM}"\n'
        )

        async def publish(client: Any) -> None:
            js = client.jetstream()
            await _make_stream(js)
            for n in range(total):
                await js.publish(SUBJECT, message(n, patient=n % 37))

        anyio.run(functools.partial(_with_js, url, publish), backend="asyncio")
        for _ in range(3):
            with node(data, config=config) as (proc, _port):
                time.sleep(rng.uniform(0.05, 0.5))
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
            progress.append(len(log_ids(data)))
        with node(data, config=config):
            anyio.run(functools.partial(until_consumed, url, STREAM, "vigil", total), backend="asyncio")
    ids = log_ids(data)
    assert any(0 < n < total for n in progress), f"no kill landed mid-stream: {progress} (seed {seed})"
    assert len(ids) == len(set(ids)), f"a message appended twice (seed {seed})"
    assert set(ids) == {f"hl7:LAB|GENHOSP|NATS{n:06d}" for n in range(total)}, f"seed {seed}"


def test_a_missing_stream_is_one_clear_line(tmp_path: Path) -> None:
    """The node does not create streams on a shared broker: it says which one is missing and exits non-zero."""
    with nats_server(tmp_path / "nats") as url:
        config = tmp_path / "vigil.toml"
        config.write_text(f'[nats]\nservers = ["{url}"]\n[[nats.subjects]]\nsubject = "x"\nstream = "NOPE"\n')
        done = subprocess.run(
            [VIGIL, "--config", str(config), "run", "--data", str(tmp_path / "data")],
            capture_output=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    assert done.returncode != 0
    last = done.stderr.decode().strip().splitlines()[-1]
    assert "stream 'NOPE'" in last
    assert "not found" in last
