"""The alert rules at their limits, and the board's raise-once, clear-once bookkeeping (property test)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.alerts import Alert, AlertBoard, Observation, RouteAge, judge
from engine.core.errors import ConfigError
from engine.infra.config import AlertsConfig, QuietFeedConfig, decode_config

S = 1_000_000
START = 1_700_000_000 * S


def _seen(**changes: object) -> Observation:
    base = Observation(
        now_us=START + 600 * S,
        started_us=START,
        senders={},
        quarantine_open=0,
        read_side_lag=0,
        disk_free_percent=50.0,
    )
    return msgspec.structs.replace(base, **changes)


def _rules(alerts: list[Alert]) -> list[tuple[str, str]]:
    return [(a.rule, a.subject) for a in alerts]


def test_a_calm_node_raises_nothing() -> None:
    assert judge(AlertsConfig(quiet=(QuietFeedConfig("LAB^GENHOSP", 600),)), _seen()) == []


def test_a_feed_is_quiet_only_past_its_interval_counted_from_its_last_message() -> None:
    config = AlertsConfig(quiet=(QuietFeedConfig("LAB^GENHOSP", 60),))
    heard = START + 540 * S
    assert judge(config, _seen(senders={"LAB^GENHOSP": heard})) == []  # exactly 60 s ago
    [alert] = judge(config, _seen(senders={"LAB^GENHOSP": heard - 1}))
    assert (alert.rule, alert.subject, alert.detail) == (
        "feed_quiet",
        "LAB^GENHOSP",
        "no message for 60 s (expected within 60 s)",
    )


def test_a_feed_never_heard_counts_from_the_nodes_start() -> None:
    config = AlertsConfig(quiet=(QuietFeedConfig("PHARM^GENHOSP", 900),))
    assert judge(config, _seen()) == []  # up 600 s
    [alert] = judge(config, _seen(now_us=START + 901 * S, senders={"LAB^GENHOSP": START + 900 * S}))
    assert alert.detail == "never heard since the node started (expected within 900 s)"


def test_an_application_without_a_facility_is_heard_from_any_of_its_facilities() -> None:
    config = AlertsConfig(quiet=(QuietFeedConfig("LAB", 60),))
    assert judge(config, _seen(senders={"LAB^WEST": START + 590 * S, "LAB^EAST": START})) == []
    assert _rules(judge(config, _seen(senders={"LABX^EAST": START + 590 * S}))) == [("feed_quiet", "LAB")]


def test_each_limit_is_passed_only_above_it_and_zero_turns_its_rule_off() -> None:
    config = AlertsConfig(quarantine_open_max=5, read_side_lag_max_records=100, disk_free_min_percent=10)
    assert judge(config, _seen(quarantine_open=5, read_side_lag=100, disk_free_percent=10.0)) == []
    loud = _seen(quarantine_open=6, read_side_lag=101, disk_free_percent=9.9, routes=())
    assert _rules(judge(config, loud)) == [
        ("quarantine_growing", "quarantine"),
        ("read_side_lag", "projections"),
        ("disk_free", "data"),
    ]
    off = AlertsConfig(quarantine_open_max=0, read_side_lag_max_records=0, disk_free_min_percent=0)
    assert judge(off, loud) == []
    assert judge(config, _seen(read_side_lag=None, disk_free_percent=None)) == []  # no read side, no figure


def test_a_routes_oldest_undelivered_message_past_the_routes_own_limit() -> None:
    routes = (
        RouteAge("ehr", "critical", 3, 301.0, 300.0),
        RouteAge("ehr", "batch", 0, None, 300.0),
        RouteAge("pharmacy", "standard", 9, 50.0, 60.0),
    )
    [alert] = judge(AlertsConfig(), _seen(routes=routes))
    assert (alert.rule, alert.subject, alert.detail) == (
        "route_backlog_age",
        "ehr critical",
        "oldest undelivered 301 s, 3 waiting (limit 300 s)",
    )
    assert judge(AlertsConfig(routes=False), _seen(routes=routes)) == []


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('webhook_url = "http://pager.example.org/hook"', "https is required off this host"),
        ('webhook_url = "ftp://127.0.0.1/x"', r"is not an http\(s\) URL"),
        ('[[alerts.quiet]]\nsender = "LAB"\nwithin_s = 1\n[[alerts.quiet]]\nsender = "LAB"\nwithin_s = 2', "twice"),
        ("interval_s = 0", "interval_s"),
    ],
)
def test_a_wrong_alerts_section_is_refused_at_load_naming_the_key(text: str, why: str) -> None:
    body = text if text.startswith("[[") else f"[alerts]\n{text}"
    with pytest.raises(ConfigError, match=why):
        decode_config(body)


def test_the_shipped_defaults_load() -> None:
    config = decode_config("[alerts]\nwebhook_url = 'https://pager.example.org/hook'\n")
    assert config.alerts.webhook_url.startswith("https://")


_KEYS = st.sampled_from([("feed_quiet", "LAB"), ("disk_free", "data"), ("quarantine_growing", "quarantine")])


@given(st.lists(st.frozensets(_KEYS), max_size=12))
def test_each_alert_is_raised_once_when_it_first_holds_and_cleared_once_when_it_stops(
    rounds: list[frozenset[tuple[str, str]]],
) -> None:
    board = AlertBoard()
    held: dict[tuple[str, str], int] = {}
    for at, now in enumerate(rounds):
        raised, cleared = board.update([Alert(rule, subject, f"round {at}") for rule, subject in now], at)
        assert {(a.rule, a.subject) for a in raised} == now - held.keys()
        assert {(a.rule, a.subject) for a in cleared} == held.keys() - now
        held = {key: held.get(key, at) for key in now}
        assert {(a.rule, a.subject): a.since_us for a in board.active()} == held
        assert all(a.detail == f"round {at}" for a in board.active())  # the figures are today's
    assert board.raised_total == sum(len(now - prev) for prev, now in zip([frozenset(), *rounds], rounds, strict=False))


def test_an_api_token_expiring_within_the_warning_or_expired_is_an_alert_until_rotated() -> None:
    now_s = (START + 600 * S) / S
    expiries = {"lab-app": now_s + 14 * 86_400, "pharmacy": now_s + 14 * 86_400 + 1, "old": 0.0, "ehr": now_s - 1}
    alerts = judge(AlertsConfig(), _seen(token_expiries=expiries))
    assert [(a.subject, a.detail) for a in alerts] == [
        ("ehr", "its token expired on 2023-11-14: vigil client rotate ehr"),
        ("lab-app", "its token expires on 2023-11-28: vigil client rotate lab-app"),
    ]
    assert {a.rule for a in alerts} == {"client_token_expiring"}
    assert judge(AlertsConfig(client_token_warn_days=0), _seen(token_expiries=expiries)) == []
