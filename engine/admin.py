"""The admin endpoint: a Unix socket in the data directory, one request, one response.

Frames are `length (4 bytes, little-endian) | MessagePack body`. A request
names its operation (`status`, `patient`); the response says `ok` and holds
either `data` or a one-line `error`. The CLI is the client. The socket is
owner-only (0600, in an owner-only data directory); on top of that, every
request that shows PHI carries a session token (`auth`) that the node checks
and audits (`engine.auth_endpoint`).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, final

import anyio
import msgspec
import structlog
from anyio.abc import SocketStream

__all__ = ["SOCKET_NAME", "AdminError", "AdminServer", "Handler", "NodeNotRunningError", "request"]

SOCKET_NAME: Final = "admin.sock"
_LENGTH = struct.Struct("<I")
_REQUEST_BYTES_MAX = 64 * 1024
_RESPONSE_BYTES_MAX = 256 * 1024 * 1024
_log = structlog.get_logger("vigil.admin")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class AdminError(Exception):
    """The node could not be reached, or refused the request."""


class NodeNotRunningError(AdminError):
    """No node serves this data directory (no socket, or nobody listening on it)."""


@final
class AdminServer:
    """Serves requests on `data_dir/admin.sock` with one handler per operation."""

    def __init__(self, data_dir: Path, handlers: dict[str, Handler]) -> None:
        self.path = data_dir / SOCKET_NAME
        self._handlers = handlers

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await anyio.to_thread.run_sync(lambda: self.path.unlink(missing_ok=True))
        try:
            listener = await anyio.create_unix_listener(self.path)
        except OSError as exc:
            # A data directory too deep for a socket path (about 100 bytes) must not stop
            # the node: it runs, and says why the CLI cannot reach it.
            _log.error("admin.unavailable", path_length=len(str(self.path)), reason=exc.strerror or str(exc))
            task_status.started()
            return
        await anyio.to_thread.run_sync(self.path.chmod, 0o600)
        task_status.started()
        async with listener:
            await listener.serve(self._serve_one)

    async def _serve_one(self, stream: SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(10):
                    request = msgspec.msgpack.decode(await _receive(stream, _REQUEST_BYTES_MAX))
                reply: dict[str, Any] = {"ok": True, "data": await self._dispatch(request)}
            except (AdminError, msgspec.DecodeError, ValueError) as exc:
                reply = {"ok": False, "error": str(exc)}
            except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError):
                return
            body = msgspec.msgpack.encode(reply)
            await stream.send(_LENGTH.pack(len(body)) + body)

    async def _dispatch(self, request: object) -> Any:
        if not isinstance(request, dict) or request.get("op") not in self._handlers:
            raise AdminError(f"unknown request (operations: {', '.join(sorted(self._handlers))})")
        return await self._handlers[request["op"]](request)


async def _receive(stream: SocketStream, limit: int) -> bytes:
    data = b""
    while len(data) < _LENGTH.size:
        data += await stream.receive(_LENGTH.size - len(data))
    (size,) = _LENGTH.unpack(data)
    if size > limit:
        raise AdminError(f"request of {size} bytes is over the limit")
    body = b""
    while len(body) < size:
        body += await stream.receive(size - len(body))
    return body


def request(data_dir: Path, operation: str, timeout_s: float = 30.0, **fields: Any) -> Any:
    """Send one request to the node on `data_dir` and return its data (a blocking client).

    Raises:
        AdminError: no node is running there, or it refused the request.
    """
    path = data_dir / SOCKET_NAME
    body = msgspec.msgpack.encode({"op": operation, **fields})
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout_s)
            conn.connect(str(path))
            conn.sendall(_LENGTH.pack(len(body)) + body)
            head = _recv_exactly(conn, _LENGTH.size)
            (size,) = _LENGTH.unpack(head)
            if size > _RESPONSE_BYTES_MAX:
                raise AdminError("response over the limit")
            reply = msgspec.msgpack.decode(_recv_exactly(conn, size))
    except (FileNotFoundError, ConnectionRefusedError):
        raise NodeNotRunningError(f"no node is running on {data_dir}") from None
    except OSError as exc:
        raise AdminError(f"{path}: {exc.strerror or exc}") from None
    if not reply.get("ok"):
        raise AdminError(str(reply.get("error")))
    return reply.get("data")


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise AdminError("the node closed the connection")
        data += chunk
    return data
