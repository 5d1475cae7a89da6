"""The admin endpoint itself: a request that fails inside the node is an answer, never the endpoint's end."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.infra.admin_socket import AdminError, AdminServer, request

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets")


@pytest.mark.anyio
async def test_a_failing_handler_gets_a_one_line_error_and_the_endpoint_serves_on(tmp_path: Path) -> None:
    async def boom(_request: dict[str, Any]) -> object:
        raise RuntimeError("MRN12345 would be here")  # the text may quote data: it must not reach the client

    async def fine(request: dict[str, Any]) -> object:
        return {"network": request["network"]}

    server = AdminServer(tmp_path, {"boom": boom, "fine": fine})
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        with pytest.raises(AdminError) as failed:
            await anyio.to_thread.run_sync(lambda: request(tmp_path, "boom"))
        assert "failed to answer (RuntimeError)" in str(failed.value)
        assert "MRN12345" not in str(failed.value)
        # The client cannot claim to be local or remote: the endpoint says which.
        assert await anyio.to_thread.run_sync(lambda: request(tmp_path, "fine", network=True)) == {"network": False}
        with pytest.raises(AdminError, match="unknown request"):
            await anyio.to_thread.run_sync(lambda: request(tmp_path, "nope"))
        tg.cancel_scope.cancel()
    assert (tmp_path / "admin.sock").stat().st_mode & 0o077 == 0
