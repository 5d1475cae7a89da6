"""An alert's POST to a webhook (a pager, a chat room, an incident tool): JSON, tried a few times, then given up.

A webhook that is down never holds back the judging or the node: notices
wait in a bounded queue (`AlertWatch`), each tried `attempts` times with
doubling pauses, then counted and logged as failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import final

import anyio
import httpx
import structlog

__all__ = ["Webhook"]

_log = structlog.get_logger("vigil.alerts")


@final
class Webhook:
    """POSTs each notice as JSON to one URL, with a bearer token when one is configured."""

    def __init__(
        self, url: str, *, token: str = "", timeout_s: float = 5.0, attempts: int = 3, pause_s: float = 1.0
    ) -> None:
        self.url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._pause_s = pause_s

    @classmethod
    def from_files(cls, url: str, token_file: str, timeout_s: float) -> Webhook:
        """The token read once from its file (the configuration never holds it).

        Raises:
            OSError: the token file cannot be read.
        """
        token = Path(token_file).read_text().strip() if token_file else ""
        return cls(url, token=token, timeout_s=timeout_s)

    async def post(self, client: httpx.AsyncClient, notice: Mapping[str, object]) -> bool:
        """True once the webhook answered 2xx; False after every attempt failed (each logged)."""
        pause = self._pause_s
        for attempt in range(1, self._attempts + 1):
            try:
                answer = await client.post(self.url, json=dict(notice), headers=self._headers, timeout=self._timeout_s)
            except httpx.HTTPError as exc:
                why = type(exc).__name__
            else:
                if answer.is_success:
                    return True
                why = f"HTTP {answer.status_code}"
            _log.warning("alert.webhook_attempt_failed", attempt=attempt, of=self._attempts, why=why)
            if attempt < self._attempts:
                await anyio.sleep(pause)
                pause *= 2
        return False
