"""The alert watcher: each change said once (a log line, its statistics, a POST to a real HTTP endpoint),
a webhook that fails tried again then counted, and a token sent as a bearer. On trio and asyncio."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import structlog

from engine.alerts import AlertWatch, Observation, Webhook
from engine.infra.config import AlertsConfig, QuietFeedConfig
from tests.harness.webhook_receiver import Received, webhook_receiver

pytestmark = pytest.mark.anyio

S = 1_000_000
START = 1_700_000_000 * S


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class _Node:
    """What the watcher observes, moved on by the test."""

    def __init__(self) -> None:
        self.seen = Observation(START, START, {}, 0, None, 50.0)

    async def observe(self) -> Observation:
        return self.seen

    def at(self, seconds: int, **senders: int) -> None:
        self.seen = Observation(START + seconds * S, START, senders, 0, None, 50.0)


async def _until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110 -- the endpoint is another thread's server: nothing to wait on
            await anyio.sleep(0.01)


async def _serve_until(watch: AlertWatch, received: Received, count: int) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(watch.run)
        await _until(lambda: len(received.bodies()) >= count)
        tg.cancel_scope.cancel()


async def test_a_quiet_feed_is_raised_once_said_everywhere_and_cleared_once_it_speaks() -> None:
    config = AlertsConfig(interval_s=3600, quiet=(QuietFeedConfig("LAB^GENHOSP", 60),))
    node = _Node()
    with webhook_receiver() as received:
        watch = AlertWatch(config, "node-a", node.observe, Webhook(received.url, token="s3cret"))
        with structlog.testing.capture_logs() as said:
            await watch.judge_once()  # up 0 s: quiet for no time yet
            node.at(61)
            await watch.judge_once()
            await watch.judge_once()  # still quiet: said once
            [active] = watch.statistics().active
            assert (active.rule, active.subject, active.since_us) == ("feed_quiet", "LAB^GENHOSP", START + 61 * S)
            node.at(70, **{"LAB^GENHOSP": START + 69 * S})
            await watch.judge_once()
        assert [(e["event"], e.get("subject")) for e in said] == [
            ("alert.raised", "LAB^GENHOSP"),
            ("alert.cleared", "LAB^GENHOSP"),
        ]
        assert said[1]["held_s"] == 9.0
        await _serve_until(watch, received, 2)  # the notices made so far go out in order
        raised, cleared = received.bodies()
        assert {k: raised[k] for k in ("node", "state", "rule", "subject")} == {
            "node": "node-a",
            "state": "raised",
            "rule": "feed_quiet",
            "subject": "LAB^GENHOSP",
        }
        assert raised["detail"] == "never heard since the node started (expected within 60 s)"
        assert (cleared["state"], cleared["since"]) == ("cleared", raised["since"])
        assert received.authorizations == ["Bearer s3cret"] * 2
        stats = watch.statistics()
        assert (stats.active, stats.raised_total, stats.webhook_sent, stats.webhook_failed) == ([], 1, 2, 0)
        assert stats.webhook == received.url.rsplit("/hooks", 1)[0]  # scheme and host only


async def test_a_webhook_that_fails_is_tried_three_times_then_counted_and_the_next_notice_goes() -> None:
    with webhook_receiver() as received:
        received.status = 503
        hook = Webhook(received.url, pause_s=0.01)
        async with httpx.AsyncClient() as client:
            with structlog.testing.capture_logs() as said:
                assert not await hook.post(client, {"state": "raised"})
            assert [e["why"] for e in said] == ["HTTP 503"] * 3
            assert len(received.bodies()) == 3
            received.status = 204
            assert await hook.post(client, {"state": "cleared"})
    with webhook_receiver() as gone:
        url = gone.url
    async with httpx.AsyncClient() as client:  # nothing listens there now
        assert not await Webhook(url, pause_s=0.01, timeout_s=1).post(client, {"state": "raised"})


async def test_the_token_is_read_from_its_file_and_never_shown(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    hook = Webhook.from_files("https://user:pw@pager.example.org/k/abc?key=zz", str(token), 2.0)
    node = _Node()
    watch = AlertWatch(AlertsConfig(), "n", node.observe, hook)
    shown: Any = watch.statistics()
    assert shown.webhook == "https://pager.example.org"


async def test_a_look_that_fails_is_logged_and_the_board_kept_so_nothing_is_raised_twice() -> None:
    config = AlertsConfig(interval_s=0.01, quiet=(QuietFeedConfig("LAB^GENHOSP", 60),))
    node = _Node()
    node.at(61)
    looks = 0

    async def flaky() -> Observation:
        nonlocal looks
        looks += 1
        if looks == 2:
            raise OSError(5, "the quarantine's disk went away")
        return await node.observe()

    watch = AlertWatch(config, "n", flaky)
    with structlog.testing.capture_logs() as said:
        async with anyio.create_task_group() as tg:
            await tg.start(watch.run)
            await _until(lambda: looks >= 4)
            tg.cancel_scope.cancel()
    events = [e["event"] for e in said]
    assert events.count("alert.raised") == 1
    assert "alert.observe_failed" in events
    assert watch.statistics().raised_total == 1
