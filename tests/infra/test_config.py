"""The configuration: config.toml decodes, agrees with the code, and refuses mistakes in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.errors import ConfigError
from engine.infra.config import DEFAULT_CONFIG_PATH, Config, decode_config, load_config


def test_the_shipped_config_is_the_documented_default() -> None:
    """config.toml states every default explicitly, and they equal the code's."""
    assert Config() == load_config(DEFAULT_CONFIG_PATH)


def test_every_key_is_optional() -> None:
    """An empty file is the embedded default."""
    assert Config() == decode_config(b"")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[ingest]\nmessage_bytes_maxx = 5",
            "unknown key ingest.message_bytes_maxx (allowed: message_bytes_max, input_bytes_max, watch_poll_interval_s,"
            " parse_workers, parse_workers_nice, parse_pool_messages_min, large_message_bytes, hl7_charset,"
            " hl7_sender_charsets)",
        ),
        ("[lanes]\nrule = 1", "unknown key lanes.rule (allowed: rules, scheduler, pacing)"),
        (
            "colour = 1",
            "unknown key colour (allowed: node, ingest, mllp, admin, http, nats, cluster, wal, audit, projections, lanes, actors, supervision, auth, collector, workstation, search, alerts, retention, routes)",
        ),
        ("[ingest]\nmessage_bytes_max = 5", "ingest.message_bytes_max: expected int >= 1024"),
        ('[ingest]\nmessage_bytes_max = "big"', "ingest.message_bytes_max: expected int, got str"),
        ('[lanes.rules]\nstat_priorities = "S"', "lanes.rules.stat_priorities: expected array, got str"),
        ("[lanes.rules]\nstat_priorities = [1]", "lanes.rules.stat_priorities[0]: expected str, got int"),
        ("[ingest\n", "not valid TOML"),
    ],
)
def test_mistakes_are_one_line_naming_the_key(text: str, message: str) -> None:
    """Unknown keys list what is allowed; wrong values say what was expected."""
    with pytest.raises(ConfigError) as info:
        decode_config(text, "site.toml")
    assert str(info.value).startswith("site.toml: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_config(tmp_path / "absent.toml")


def test_rules_from_a_file(tmp_path: Path) -> None:
    """A site's rules replace the defaults they name and keep the others."""
    path = tmp_path / "site.toml"
    path.write_text('[lanes.rules]\nlocal_critical_flags = ["CRIT"]\n')
    rules = load_config(path).lanes.rules
    assert rules.local_critical_flags == ("CRIT",)
    assert rules.critical_abnormal_flags == ("HH", "LL", "AA")
