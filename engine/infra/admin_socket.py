"""The admin endpoint: a Unix socket in the data directory, one request, one response.

Frames are `length (4 bytes, little-endian) | MessagePack body`. A request
names its operation (`status`, `patient`); the response says `ok` and holds
either `data` or a one-line `error`. The CLI is the client. The socket is
owner-only (0600, in an owner-only data directory); on top of that, every
request that shows PHI carries a session token (`auth`) that the node checks
and audits (`engine.auth.endpoint`).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, final

import anyio
import msgspec
import structlog

from engine.core.errors import VigilError

__all__ = ["SOCKET_NAME", "AdminError", "AdminServer", "Handler", "NodeNotRunningError", "request", "request_remote"]

SOCKET_NAME: Final = "admin.sock"
_LENGTH = struct.Struct("<I")
_REQUEST_BYTES_MAX = 24 * 1024 * 1024  # a message resent from quarantine (16 MB at most), in base64
_RESPONSE_BYTES_MAX = 256 * 1024 * 1024
_log = structlog.get_logger("vigil.admin")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class AdminError(VigilError):
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

    async def serve_network(
        self,
        listener: anyio.abc.Listener[Any],
        connections_max: int,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the same requests on a network listener (TLS-wrapped by the node), a bounded number at once."""
        limiter = anyio.CapacityLimiter(connections_max)

        async def one(stream: Any) -> None:
            async with limiter:
                await self._serve_one(stream, network=True)

        task_status.started()
        async with listener:
            await listener.serve(one)

    async def _serve_one(self, stream: anyio.abc.ByteStream, *, network: bool = False) -> None:
        async with stream:
            try:
                with anyio.fail_after(10):
                    request = msgspec.msgpack.decode(await _receive(stream, _REQUEST_BYTES_MAX))
                if isinstance(request, dict):
                    request["network"] = network  # set here, never taken from the client
                reply: dict[str, Any] = {"ok": True, "data": await self._dispatch(request)}
            except (AdminError, msgspec.DecodeError, ValueError) as exc:
                reply = {"ok": False, "error": str(exc)}
            except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError):
                return
            except Exception as exc:  # noqa: BLE001 -- one failed request must never take the node's endpoint down
                # The type only: an exception's text may quote the data it was handling.
                _log.error("admin.request_failed", error=type(exc).__name__)
                reply = {"ok": False, "error": f"the node failed to answer ({type(exc).__name__}); see its log"}
            body = msgspec.msgpack.encode(reply)
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                await stream.send(_LENGTH.pack(len(body)) + body)  # a client that left is no error of ours

    async def _dispatch(self, request: object) -> Any:
        if not isinstance(request, dict) or request.get("op") not in self._handlers:
            raise AdminError(f"unknown request (operations: {', '.join(sorted(self._handlers))})")
        return await self._handlers[request["op"]](request)


async def _receive(stream: anyio.abc.ByteStream, limit: int) -> bytes:
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
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout_s)
            conn.connect(str(path))
            return _exchange(conn, operation, fields)
    except (FileNotFoundError, ConnectionRefusedError):
        raise NodeNotRunningError(f"no node is running on {data_dir}") from None
    except OSError as exc:
        raise AdminError(f"{path}: {exc.strerror or exc}") from None


def request_remote(
    address: tuple[str, int], context: ssl.SSLContext, operation: str, timeout_s: float = 30.0, **fields: Any
) -> Any:
    """Send one request to a node's admin endpoint over TLS (its `[admin] listen`).

    Raises:
        AdminError: unreachable, the certificate did not verify, or the node refused.
    """
    host, port = address
    try:
        with (
            socket.create_connection(address, timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host) as conn,
        ):
            return _exchange(conn, operation, fields)
    except ssl.SSLError as exc:
        raise AdminError(f"{host}:{port}: TLS refused: {exc.reason or exc}") from None
    except OSError as exc:
        raise AdminError(f"{host}:{port}: {exc.strerror or exc}") from None


def _exchange(conn: socket.socket, operation: str, fields: dict[str, Any]) -> Any:
    body = msgspec.msgpack.encode({"op": operation, **fields})
    conn.sendall(_LENGTH.pack(len(body)) + body)
    (size,) = _LENGTH.unpack(_recv_exactly(conn, _LENGTH.size))
    if size > _RESPONSE_BYTES_MAX:
        raise AdminError("response over the limit")
    reply = msgspec.msgpack.decode(_recv_exactly(conn, size))
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
