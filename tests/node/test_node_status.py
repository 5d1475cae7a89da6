"""`status` as each asker needs it: an operator's question is answered with a count made after it was asked;
screens that poll share one count, no older than they allow.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.auth import Role
from engine.core.hl7 import parse
from engine.core.mllp import MLLPDecoder
from engine.infra.admin_socket import AdminError
from engine.infra.config import Config
from engine.node import Node
from tests.harness.node_process import exchange, message
from tests.harness.sessions import PASSWORD, add_user

_DEVICE = "desk-1"


def _serve(node: Node, scenario: Callable[[int, dict[str, object]], Awaitable[None]]) -> None:
    async def main() -> None:
        async with anyio.create_task_group() as tg:
            port = await tg.start(lambda **kw: node.run(mllp=("127.0.0.1", 0), **kw))
            assert isinstance(port, int)
            login: Any = await node.handle(
                "login", {"user": "op", "password": PASSWORD, "setting": "operator_console", "device": _DEVICE}
            )
            await scenario(port, {"token": login["token"], "device": _DEVICE})
            node.stop()

    anyio.run(main, backend="asyncio")  # the MLLP listener is asyncio's


async def _acked(port: int, seq: int) -> None:
    def send() -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            return str(parse(exchange(conn, message(seq), MLLPDecoder())).get("MSA-1"))

    assert await anyio.to_thread.run_sync(send) == "AA"


async def _lsn(node: Node, auth: dict[str, object], **asked: object) -> int:
    report: Any = await node.handle("status", {"auth": auth, **asked})
    return int(report["wal"]["last_lsn"])


def test_an_operators_status_counts_what_was_acknowledged_before_it_was_asked(tmp_path: Path) -> None:
    """Asked again at once after an ACK, status shows the new record (it once showed a count up to 0.5 s old)."""
    add_user(tmp_path, "op", Role.OPERATOR)
    node = Node(Config(), tmp_path)

    async def scenario(port: int, auth: dict[str, object]) -> None:
        before = await _lsn(node, auth)
        await _acked(port, 1)
        assert await _lsn(node, auth) == before + 1
        await _acked(port, 2)
        assert await _lsn(node, auth, max_age_s=0) == before + 2

    _serve(node, scenario)


def test_screens_that_poll_share_one_count_no_older_than_they_allow(tmp_path: Path) -> None:
    add_user(tmp_path, "op", Role.OPERATOR)
    node = Node(Config(), tmp_path)

    async def scenario(port: int, auth: dict[str, object]) -> None:
        first = await _lsn(node, auth, max_age_s=60)
        await _acked(port, 1)
        assert await _lsn(node, auth, max_age_s=60) == first  # shared: not counted again
        assert await _lsn(node, auth) == first + 1  # an operator's own question counts afresh
        assert await _lsn(node, auth, max_age_s=60) == first + 1  # and pollers take that newer count

    _serve(node, scenario)


@pytest.mark.parametrize("age", [-1, "soon", 3600, True])
def test_an_age_that_is_not_a_number_of_seconds_up_to_a_minute_is_refused(tmp_path: Path, age: object) -> None:
    add_user(tmp_path, "op", Role.OPERATOR)
    node = Node(Config(), tmp_path)

    async def scenario(_port: int, auth: dict[str, object]) -> None:
        with pytest.raises(AdminError, match="max_age_s"):
            await _lsn(node, auth, max_age_s=age)

    _serve(node, scenario)
