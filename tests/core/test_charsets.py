"""Character sets end to end: valid text is never re-decoded; invalid bytes are replaced, located and counted."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import anyio
import pytest

from engine.core.errors import ConfigError
from engine.core.hl7 import parse
from engine.core.mllp import Frame, MLLPDecoder, frame
from engine.core.model import DemographicsUpdated
from engine.infra.config import decode_config
from engine.wal import open_wal
from tests.harness.node_process import node, run_stdin

ROOT = Path(__file__).resolve().parents[2]
VIGIL = str(ROOT / "bin" / "vigil")
MSH = "MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261124101500||ADT^A08^ADT_A01|C{n}|P|2.5.1"
PID = "PID|1||MRN7^^^GENHOSP^MR||Müller^Zoë||19700101|F"


def _names(data: Path) -> list[tuple[str, tuple[str, ...]]]:
    async def read() -> list[tuple[str, tuple[str, ...]]]:
        async with open_wal(data / "wal") as wal:
            return [
                (e.family, e.given)
                for r in wal.read_from(1)
                for e in r.envelope.events
                if isinstance(e, DemographicsUpdated)
            ]

    return anyio.run(read)


def test_a_stray_byte_keeps_the_utf8_name_and_is_reported_by_location(tmp_path: Path) -> None:
    """ "Müller, Zoë" stays so beside a stray 0xff in an NTE; the warning names NTE-3 and holds no text."""
    raw = "\r".join([MSH.format(n=1), PID, "NTE|1||Qzxvw ÿ note", ""]).encode().replace("ÿ".encode(), b"\xff")
    rows, logs = run_stdin(tmp_path, raw)
    assert [r["outcome"] for r in rows] == ["accepted"]
    assert _names(tmp_path) == [("Müller", ("Zoë",))]
    [line] = [json.loads(x) for x in logs.splitlines() if "hl7.invalid_text_replaced" in x]
    assert (line["segment"], line["field"], line["replaced"]) == ("NTE", 3, 1)
    assert line["byte_offset"] == raw.index(b"\xff")
    assert "Müller" not in logs
    assert "Qzxvw" not in logs


def test_over_mllp_the_sender_gets_aa_with_a_warning_naming_where(tmp_path: Path) -> None:
    """AA (the message is stored) with ERR-4 = W naming NTE-3: the sender learns its bytes were replaced."""
    raw = "\r".join([MSH.format(n=3), PID, "NTE|1||Qzxvw ÿ note", ""]).encode().replace("ÿ".encode(), b"\xff")
    with node(tmp_path) as (_, port), socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(frame(raw))
        decoder, replies = MLLPDecoder(), []
        while not replies:
            replies = [f.payload for f in decoder.feed(conn.recv(65536)) if isinstance(f, Frame)]
    ack = parse(replies[0])
    assert (ack.get("MSA-1"), ack.get("ERR-4"), ack.get("ERR-2.1"), ack.get("ERR-2.3")) == ("AA", "W", "NTE", "3")


def test_a_legacy_sender_configured_as_latin1_is_read_as_latin1(tmp_path: Path) -> None:
    """The sender's set from config.toml reads its undeclared 8-bit text; nothing is flagged."""
    config = tmp_path / "vigil.toml"
    config.write_text('[ingest.hl7_sender_charsets]\n"LAB|GENHOSP" = "8859/1"\n')
    raw = "\r".join([MSH.format(n=2), PID, ""]).encode("latin-1")
    rows, logs = run_stdin(tmp_path / "data", raw, "--config", str(config))
    assert [r["outcome"] for r in rows] == ["accepted"]
    assert _names(tmp_path / "data") == [("Müller", ("Zoë",))]
    assert "hl7.invalid_text_replaced" not in logs


def test_an_unreadable_character_set_in_the_configuration_is_refused_at_load() -> None:
    """UTF-16 does not keep the ASCII delimiters; an unknown name is unknown: one line naming the key."""
    with pytest.raises(ConfigError, match="hl7_charset: character set 'utf-16'"):
        decode_config('[ingest]\nhl7_charset = "utf-16"\n')
    with pytest.raises(ConfigError, match=re.escape("hl7_sender_charsets.A|B: character set 'klingon'")):
        decode_config('[ingest.hl7_sender_charsets]\n"A|B" = "klingon"\n')
