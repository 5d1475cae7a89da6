"""The HTTP server: hypercorn serving the ASGI app on the node's own event loop, trio or asyncio.

The socket is bound here (port 0: any free port, reported to the caller)
and handed to hypercorn by descriptor. Hypercorn is given a shutdown
trigger, so it never takes the process's SIGTERM from the node; when the
node stops this part, requests in progress get `grace_s` to finish.
Hypercorn's access log is off: a FHIR path names a patient.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Final, cast, final

import anyio
import sniffio
from anyio.abc import TaskStatus
from hypercorn.config import Config as HypercornConfig
from hypercorn.typing import ASGIFramework
from starlette.types import ASGIApp

__all__ = ["HttpServer"]

_LOG: Final = logging.getLogger("vigil.http.server")


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
        self._app = cast(ASGIFramework, app)  # the same ASGI interface, typed by each package its own way
        self._address = address
        self._tls = tls
        self._keep_alive_s = keep_alive_s
        self._grace_s = grace_s

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; `task_status.started(port)` once the socket listens."""
        host, port = self._address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=256)
        bound = sock.getsockname()[1]
        config = self._config(sock.detach())  # hypercorn owns the descriptor now, and closes it
        stop, done = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._run, config, stop, done)
            task_status.started(bound)
            try:
                await anyio.sleep_forever()
            finally:
                stop.set()  # hypercorn's own graceful stop: the requests in progress finish
                with anyio.CancelScope(shield=True), anyio.move_on_after(self._grace_s + 1):
                    await done.wait()

    def _config(self, descriptor: int) -> HypercornConfig:
        config = HypercornConfig()
        config.bind = [f"fd://{descriptor}"]
        config.accesslog = None
        config.errorlog = _LOG
        config.include_server_header = False
        config.keep_alive_timeout = self._keep_alive_s
        config.graceful_timeout = self._grace_s
        if self._tls is not None:
            config.certfile, config.keyfile = (str(p) for p in self._tls)
        return config

    async def _run(self, config: HypercornConfig, stop: anyio.Event, done: anyio.Event) -> None:
        try:
            # Shielded: a cancel would cut hypercorn's own shutdown short; `stop` ends it instead.
            with anyio.CancelScope(shield=True):
                if sniffio.current_async_library() == "trio":
                    from hypercorn.trio import serve as trio_serve  # noqa: PLC0415 -- the backend's own

                    await trio_serve(self._app, config, shutdown_trigger=stop.wait)
                else:
                    from hypercorn.asyncio import serve as asyncio_serve  # noqa: PLC0415 -- the backend's own

                    await asyncio_serve(self._app, config, shutdown_trigger=stop.wait)
        finally:
            done.set()
