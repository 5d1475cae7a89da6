"""The node's alert watcher: observe, judge, and say each change once (log line, metric, status, webhook).

A supervised part of its own: it only reads what the node reports, so it
can fail and be restarted without touching a message. Its board lives in
memory: after a restart of the part (or the node), what still holds is
raised again, which errs on the side of telling.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import final

import anyio
import httpx
import msgspec
import structlog
from anyio.abc import TaskStatus

from engine.alerts.rules import ActiveAlert, AlertBoard, Observation, judge
from engine.alerts.webhook import Webhook
from engine.infra.config import AlertsConfig

__all__ = ["AlertStatistics", "AlertWatch"]

_log = structlog.get_logger("vigil.alerts")
_QUEUE_MAX = 1000  # notices waiting for a webhook that is slow or down; past it the oldest are dropped, counted


@final
class AlertStatistics(msgspec.Struct, frozen=True):
    active: list[ActiveAlert]
    raised_total: int
    webhook: str  # "off", or the URL's scheme and host (never its path or query: they may hold a key)
    webhook_sent: int
    webhook_failed: int
    webhook_dropped: int


@final
class AlertWatch:
    """Judges the rules every `config.interval_s` on what `observe` returns."""

    def __init__(
        self,
        config: AlertsConfig,
        node: str,
        observe: Callable[[], Awaitable[Observation]],
        webhook: Webhook | None = None,
    ) -> None:
        self._config = config
        self._node = node
        self._observe = observe
        self._webhook = webhook
        self._board = AlertBoard()
        self._queue: list[dict[str, object]] = []
        self._queued = anyio.Event()
        self._sent = self._failed = self._dropped = 0
        # Kept across failed looks, so what holds is not raised again (and POSTed again) after one.
        self._observe_failures = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Judge at once, then every interval, until cancelled; notices go to the webhook beside it."""
        async with anyio.create_task_group() as tg:
            if self._webhook is not None:
                tg.start_soon(self._deliver, self._webhook)
            task_status.started()
            while True:
                try:
                    await self.judge_once()
                except OSError as exc:  # a look that could not be had (the quarantine's file, the disk): next time
                    self._observe_failures += 1
                    _log.warning("alert.observe_failed", error=type(exc).__name__, failures=self._observe_failures)
                await anyio.sleep(self._config.interval_s)

    async def judge_once(self) -> None:
        """One observation judged: each alert raised or cleared since the last is said."""
        seen = await self._observe()
        raised, cleared = self._board.update(judge(self._config, seen), seen.now_us)
        for alert in raised:
            _log.warning("alert.raised", rule=alert.rule, subject=alert.subject, detail=alert.detail)
            self._notify("raised", alert, seen.now_us)
        for alert in cleared:
            held_s = round((seen.now_us - alert.since_us) / 1_000_000, 1)
            _log.info("alert.cleared", rule=alert.rule, subject=alert.subject, held_s=held_s)
            self._notify("cleared", alert, seen.now_us)

    def statistics(self) -> AlertStatistics:
        hook = self._webhook
        shown = "off" if hook is None else _origin(hook.url)
        return AlertStatistics(
            self._board.active(), self._board.raised_total, shown, self._sent, self._failed, self._dropped
        )

    def _notify(self, state: str, alert: ActiveAlert, at_us: int) -> None:
        if self._webhook is None:
            return
        notice: dict[str, object] = {
            "node": self._node,
            "state": state,
            "rule": alert.rule,
            "subject": alert.subject,
            "detail": alert.detail,
            "since": _iso(alert.since_us),
            "at": _iso(at_us),
        }
        if len(self._queue) >= _QUEUE_MAX:
            del self._queue[0]
            self._dropped += 1
        self._queue.append(notice)
        self._queued.set()

    async def _deliver(self, webhook: Webhook) -> None:
        """Notices in the order they were made, one at a time: a webhook sees raised before cleared."""
        async with httpx.AsyncClient() as client:
            while True:
                await self._queued.wait()
                self._queued = anyio.Event()
                while self._queue:
                    notice = self._queue[0]
                    delivered = await webhook.post(client, notice)
                    if self._queue and self._queue[0] is notice:
                        del self._queue[0]
                    if delivered:
                        self._sent += 1
                    else:
                        self._failed += 1
                        _log.error("alert.webhook_failed", rule=notice["rule"], subject=notice["subject"])


def _iso(at_us: int) -> str:
    return datetime.fromtimestamp(at_us / 1_000_000, UTC).isoformat(timespec="seconds")


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].rpartition('@')[2]}"
