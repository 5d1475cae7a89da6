"""The message model: envelopes and events survive MessagePack and JSON unchanged."""

from __future__ import annotations

import msgspec
import pytest

from engine.core.decode import Decoder
from engine.core.feedgen import generate_feed
from engine.core.model import Envelope, Event, Lane, ResultReported


@pytest.mark.parametrize("codec", [msgspec.msgpack, msgspec.json])
def test_envelopes_round_trip(codec: object) -> None:
    """Every generated envelope encodes and decodes to an equal value, tags included."""
    decoder = Decoder()
    envelopes = [
        decoder.hl7(raw, received_at="2026-11-24T07:00:00Z", source="test") for raw in generate_feed(200, seed=5)
    ]
    enc, dec = codec.Encoder(), codec.Decoder(list[Envelope])  # type: ignore[attr-defined]
    assert envelopes == dec.decode(enc.encode(envelopes))


def test_events_are_a_tagged_union() -> None:
    """An event decodes to its own type from its `event` tag."""
    raw = b'{"event":"result","result_key":"k","code":{"code":"2823-3"},"value":"6.9","abnormal_flags":["HH"]}'
    event = msgspec.json.decode(raw, type=Event)
    assert isinstance(event, ResultReported)
    assert event.abnormal_flags == ("HH",)


def test_lane_rank_orders_urgency() -> None:
    """Critical is most urgent, batch least."""
    assert [lane.rank for lane in (Lane.CRITICAL, Lane.STANDARD, Lane.BATCH)] == [0, 1, 2]


def test_feed_is_deterministic() -> None:
    """The generated feed depends on the seed only."""
    assert generate_feed(50, seed=9) == generate_feed(50, seed=9)
    assert generate_feed(50, seed=9) != generate_feed(50, seed=10)
