"""The node's NATS connection with a token and TLS, against a real `nats-server` that demands both.

The broker's certificate comes from a throwaway CA (trustme, in memory, never
committed). With the CA and the token the node takes a core request and
answers it; without the token it never connects; a token variable named but
unset is one clear line at start.
"""

from __future__ import annotations

import json
import ssl
import sys
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest
import trustme

from engine.core.errors import ConfigError
from engine.infra.config import Config, NatsConfig, NatsSubjectConfig
from engine.infra.tls import nats_security
from engine.node import Node
from tests.harness.helpers import oru
from tests.harness.nats_server import nats_server

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

TOKEN = "nats-token-for-this-test-only"


def _broker_tls(tmp_path: Path) -> tuple[str, Path]:
    """The server's tls and authorization blocks, and the CA file clients need."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    extra = f'tls {{ cert_file: "{cert_file}", key_file: "{key_file}" }}\nauthorization {{ token: "{TOKEN}" }}'
    return extra, ca_file


def _config(url: str, ca_file: Path, **security: str) -> Config:
    nats_config = NatsConfig(
        servers=(url,), subjects=(NatsSubjectConfig("hl7.in", mode="core"),), tls_ca_file=str(ca_file), **security
    )
    return Config(nats=nats_config)


def test_a_node_with_the_token_and_the_ca_takes_requests_over_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra, ca_file = _broker_tls(tmp_path)
    monkeypatch.setenv("VIGIL_TEST_NATS_TOKEN", TOKEN)
    with nats_server(tmp_path / "nats", extra) as url:

        async def scenario() -> Any:
            node = Node(_config(url, ca_file, token_env="VIGIL_TEST_NATS_TOKEN"), tmp_path / "data")
            async with anyio.create_task_group() as tg:
                await tg.start(node.run)
                context = ssl.create_default_context(cafile=str(ca_file))
                client = await nats.connect(url, token=TOKEN, tls=context)
                try:
                    with anyio.fail_after(30):
                        while True:  # the node subscribes once connected
                            try:
                                reply = await client.request("hl7.in", oru("OBX|1|NM|K||4.1|||N"), timeout=2)
                                break
                            except nats.errors.NoRespondersError:
                                await anyio.sleep(0.1)
                finally:
                    await client.close()
                node.stop()
            return json.loads(reply.data)

        [result] = anyio.run(scenario, backend="asyncio")
    assert result["outcome"] == "accepted"


def test_a_node_without_the_token_never_connects(tmp_path: Path) -> None:
    extra, ca_file = _broker_tls(tmp_path)
    with nats_server(tmp_path / "nats", extra) as url:

        async def scenario() -> str:
            node = Node(_config(url, ca_file), tmp_path / "data")
            async with anyio.create_task_group() as tg:
                await tg.start(node.run)
                await anyio.sleep(3)
                health = await node.handle("health", {})
                assert isinstance(health, dict)
                state = str(health["sources"]["nats"])
                node.stop()
            return state

        assert anyio.run(scenario, backend="asyncio") != "connected"


def test_a_secret_variable_named_but_unset_is_one_clear_line(tmp_path: Path) -> None:
    config = NatsConfig(servers=("nats://127.0.0.1:9",), token_env="VIGIL_TEST_NO_SUCH_TOKEN")
    with pytest.raises(ConfigError, match=r"nats.token_env names \$VIGIL_TEST_NO_SUCH_TOKEN, which is not set"):
        nats_security(config, tmp_path)
    with pytest.raises(ConfigError, match="both tls_cert_file and tls_key_file"):
        nats_security(NatsConfig(tls_cert_file="a.pem"), tmp_path)
    with pytest.raises(ConfigError, match="password_env"):
        nats_security(NatsConfig(user="vigil"), tmp_path)
