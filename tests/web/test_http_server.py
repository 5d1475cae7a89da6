"""The HTTP server on the node's own event loop, trio and asyncio: it serves, it lets a request finish on stop, it stops."""

from __future__ import annotations

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
