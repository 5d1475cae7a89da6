"""Alert rules, judged on what the node reports (pure: the watcher observes, this decides).

Each alert is named by its rule and its subject (a sender, a route's lane,
"quarantine"): the board raises it once when it first holds and clears it
once when it stops holding. Details carry counts, ages and system names
only, never a message's content.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import final

import msgspec

from engine.infra.config import AlertsConfig, QuietFeedConfig

__all__ = ["ActiveAlert", "Alert", "AlertBoard", "Observation", "RouteAge", "judge"]

_US = 1_000_000


@final
class RouteAge(msgspec.Struct, frozen=True):
    """One route's lane: what waits, how old its oldest is (None: nothing waits), and the route's limit."""

    route: str
    lane: str
    backlog: int
    oldest_age_s: float | None
    limit_s: float


@final
class Observation(msgspec.Struct, frozen=True):
    """What the rules look at, as the node saw it at `now_us` (wall clock, microseconds)."""

    now_us: int
    started_us: int
    senders: Mapping[str, int]  # MSH-3^MSH-4 -> when its last message was logged
    quarantine_open: int
    read_side_lag: int | None  # records; None without a read side
    disk_free_percent: float | None
    routes: tuple[RouteAge, ...] = ()
    token_expiries: Mapping[str, float] = msgspec.field(default_factory=dict)  # API client -> expires (s)


@final
class Alert(msgspec.Struct, frozen=True):
    rule: str
    subject: str
    detail: str


@final
class ActiveAlert(msgspec.Struct, frozen=True):
    """An alert that holds, and since when (wall clock, microseconds)."""

    rule: str
    subject: str
    detail: str
    since_us: int


def judge(config: AlertsConfig, seen: Observation) -> list[Alert]:
    """Every alert that holds now under `config`'s rules."""
    alerts = [alert for feed in config.quiet if (alert := _quiet(feed, seen)) is not None]
    if config.quarantine_open_max and seen.quarantine_open > config.quarantine_open_max:
        detail = f"{seen.quarantine_open} open items (limit {config.quarantine_open_max})"
        alerts.append(Alert("quarantine_growing", "quarantine", detail))
    lag_max = config.read_side_lag_max_records
    if lag_max and seen.read_side_lag is not None and seen.read_side_lag > lag_max:
        alerts.append(Alert("read_side_lag", "projections", f"{seen.read_side_lag} records behind (limit {lag_max})"))
    free_min = config.disk_free_min_percent
    if free_min and seen.disk_free_percent is not None and seen.disk_free_percent < free_min:
        alerts.append(Alert("disk_free", "data", f"{seen.disk_free_percent:.1f}% free (limit {free_min:g}%)"))
    if config.routes:
        alerts.extend(_old_backlog(r) for r in seen.routes if r.oldest_age_s is not None and r.oldest_age_s > r.limit_s)
    if config.client_token_warn_days:
        alerts.extend(_expiring(config.client_token_warn_days, seen))
    return alerts


def _expiring(warn_days: int, seen: Observation) -> list[Alert]:
    """API clients whose token expires within `warn_days` (or has expired): rotate before their calls fail."""
    now_s = seen.now_us / _US
    alerts = []
    for client, expires in sorted(seen.token_expiries.items()):
        if not expires or expires - now_s > warn_days * 86_400:
            continue
        day = datetime.fromtimestamp(expires, UTC).date().isoformat()
        detail = f"its token expired on {day}" if expires <= now_s else f"its token expires on {day}"
        alerts.append(Alert("client_token_expiring", client, f"{detail}: vigil client rotate {client}"))
    return alerts


def _quiet(feed: QuietFeedConfig, seen: Observation) -> Alert | None:
    """The feed silent past its interval; one never heard counts from the node's start."""
    last = _last_heard(feed.sender, seen.senders)
    silent_s = (seen.now_us - (last if last is not None else seen.started_us)) / _US
    if silent_s <= feed.within_s:
        return None
    heard = "never heard since the node started" if last is None else f"no message for {silent_s:.0f} s"
    return Alert("feed_quiet", feed.sender, f"{heard} (expected within {feed.within_s:g} s)")


def _last_heard(sender: str, senders: Mapping[str, int]) -> int | None:
    """`APP^FAC` exactly, or `APP` from any facility (as `vigil log --sender` matches)."""
    if "^" in sender:
        return senders.get(sender)
    times = [at for name, at in senders.items() if name.startswith(f"{sender}^")]
    return max(times, default=None)


def _old_backlog(route: RouteAge) -> Alert:
    age = route.oldest_age_s or 0.0
    detail = f"oldest undelivered {age:.0f} s, {route.backlog} waiting (limit {route.limit_s:g} s)"
    return Alert("route_backlog_age", f"{route.route} {route.lane}", detail)


@final
class AlertBoard:
    """The alerts that hold: each raised once when it first holds, cleared once when it stops."""

    def __init__(self) -> None:
        self._active: dict[tuple[str, str], ActiveAlert] = {}
        self.raised_total = 0

    def update(self, alerts: Iterable[Alert], at_us: int) -> tuple[list[ActiveAlert], list[ActiveAlert]]:
        """Take what holds now; (raised, cleared) since the last update. A held alert keeps its start."""
        now = {(a.rule, a.subject): a for a in alerts}
        before = self._active
        self._active = {
            key: ActiveAlert(a.rule, a.subject, a.detail, before[key].since_us if key in before else at_us)
            for key, a in now.items()
        }
        raised = [alert for key, alert in self._active.items() if key not in before]
        cleared = [alert for key, alert in before.items() if key not in now]
        self.raised_total += len(raised)
        return raised, cleared

    def active(self) -> list[ActiveAlert]:
        """What holds, oldest first."""
        return sorted(self._active.values(), key=lambda a: (a.since_us, a.rule, a.subject))
