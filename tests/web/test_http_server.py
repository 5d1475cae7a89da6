"""The HTTP server on the node's own event loop, trio and asyncio: it serves, it lets a request finish on stop, it stops."""

from __future__ import annotations

import socket

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from engine.web import HttpServer

pytestmark = pytest.mark.anyio


async def test_a_request_in_progress_finishes_when_the_server_stops() -> None:
    started, release = anyio.Event(), anyio.Event()

    async def slow(_request: Request) -> Response:
        started.set()
        await release.wait()
        return PlainTextResponse("finished")

    server = HttpServer(Starlette(routes=[Route("/slow", slow)]), ("127.0.0.1", 0), grace_s=5)
    answers: list[str] = []
    async with httpx.AsyncClient(timeout=10) as client, anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def serve(*, task_status: anyio.abc.TaskStatus[int]) -> None:
            with scope:
                await server.serve(task_status=task_status)

        port = await tg.start(serve)

        async def ask() -> None:
            answers.append((await client.get(f"http://127.0.0.1:{port}/slow")).text)

        tg.start_soon(ask)
        await started.wait()
        scope.cancel()  # the node stops this part while the request is in progress
        await anyio.sleep(0.05)
        release.set()
    assert answers == ["finished"]
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=2) as client:
            await client.get(f"http://127.0.0.1:{port}/slow")


def test_the_listening_socket_says_tcp_so_each_connection_has_nagle_off() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose protocol is IPPROTO_TCP (socket.create_server's is 0):
    without it every small answer on a kept-alive connection waited 40 ms for the client's delayed ACK."""
    from engine.web.server import _listening

    with _listening("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
        with socket.create_connection(sock.getsockname()) as client:
            accepted, _ = sock.accept()
            with accepted:
                assert accepted.proto == socket.IPPROTO_TCP
                del client
