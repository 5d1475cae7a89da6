"""The HTTP server: the ASGI app served on the node's own event loop, asyncio or trio.

On asyncio (how `vigil run` runs) uvicorn serves it with httptools, HTTP/1.1
parsed in C: with hypercorn (h11, pure Python) HL7 v2 over HTTP reached
0.57 x MLLP's durable throughput at 8 connections (`bench_http`). On trio,
where uvicorn does not run, hypercorn serves it.

The socket is bound here (port 0: any free port, reported to the caller).
Neither server takes the process's SIGTERM from the node: uvicorn's signal
capture is switched off, hypercorn is given a shutdown trigger. When the node
stops this part, requests in progress get `grace_s` to finish. No access
log: a FHIR path names a patient.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Generator
from pathlib import Path
from typing import Final, cast, final

import anyio
import sniffio
import uvicorn
from anyio.abc import TaskStatus
from hypercorn.config import Config as HypercornConfig
from hypercorn.typing import ASGIFramework
from starlette.types import ASGIApp

__all__ = ["HttpServer"]

_LOG: Final = logging.getLogger("vigil.http.server")


def _listening(host: str, port: int) -> socket.socket:
    """A listening TCP socket whose protocol says TCP: asyncio then turns Nagle off on each connection.

    `socket.create_server` leaves the protocol 0, and asyncio sets TCP_NODELAY
    only on sockets that say IPPROTO_TCP: every small answer on a kept-alive
    connection then waited 40 ms for the client's delayed ACK.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(256)
    except OSError:
        sock.close()
        raise
    return sock


@final
class _NodesSignals(uvicorn.Server):
    """uvicorn, leaving SIGINT and SIGTERM to the node (which stops its parts in order)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@final
class HttpServer:
    def __init__(
        self,
        app: ASGIApp,
        address: tuple[str, int],
        *,
        tls: tuple[Path, Path] | None = None,
        keep_alive_s: float = 5.0,
        grace_s: float = 3.0,
    ) -> None:
        self._app = app
        self._address = address
        self._tls = tls
        self._keep_alive_s = keep_alive_s
        self._grace_s = grace_s

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; `task_status.started(port)` once the socket listens."""
        sock = _listening(*self._address)
        bound = sock.getsockname()[1]
        stop, done = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._run, sock, stop, done)
            task_status.started(bound)
            try:
                await anyio.sleep_forever()
            finally:
                stop.set()  # the server's own graceful stop: the requests in progress finish
                with anyio.CancelScope(shield=True), anyio.move_on_after(self._grace_s + 1):
                    await done.wait()

    async def _run(self, sock: socket.socket, stop: anyio.Event, done: anyio.Event) -> None:
        try:
            # Shielded: a cancel would cut the server's own shutdown short; `stop` ends it instead.
            with anyio.CancelScope(shield=True):
                if sniffio.current_async_library() == "trio":
                    await self._hypercorn(sock, stop)
                else:
                    await self._uvicorn(sock, stop)
        finally:
            done.set()

    async def _uvicorn(self, sock: socket.socket, stop: anyio.Event) -> None:
        tls = {"ssl_certfile": str(self._tls[0]), "ssl_keyfile": str(self._tls[1])} if self._tls else {}
        config = uvicorn.Config(
            self._app,
            http="httptools",
            ws="none",
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_keep_alive=max(1, round(self._keep_alive_s)),
            timeout_graceful_shutdown=max(1, round(self._grace_s)),
            **tls,  # type: ignore[arg-type]
        )
        server = _NodesSignals(config)

        async def stopping() -> None:
            await stop.wait()
            server.should_exit = True

        with sock:
            async with anyio.create_task_group() as tg:
                tg.start_soon(stopping)
                await server.serve(sockets=[sock])
                tg.cancel_scope.cancel()

    async def _hypercorn(self, sock: socket.socket, stop: anyio.Event) -> None:
        from hypercorn.trio import serve  # noqa: PLC0415 -- trio's own, loaded only there

        config = HypercornConfig()
        config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the descriptor now, and closes it
        config.accesslog = None
        config.errorlog = _LOG
        config.include_server_header = False
        config.keep_alive_timeout = self._keep_alive_s
        config.graceful_timeout = self._grace_s
        if self._tls is not None:
            config.certfile, config.keyfile = (str(p) for p in self._tls)
        await serve(cast(ASGIFramework, self._app), config, shutdown_trigger=stop.wait)
