"""The codecs are total: any input gives a value or a typed InputError, never a crash.

Arbitrary bytes, and realistic messages with random damage (bytes flipped,
cut, inserted), are fed to every entry point of the pure floor.
"""

from __future__ import annotations

import contextlib

from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.core.decode import Decoder, decode_input
from engine.core.errors import InputError
from engine.core.feedgen import generate_feed
from engine.core.fhir import decode_document
from engine.core.hl7 import AckContext, Outcome, build_ack, map_message, parse, split_stream
from lanes import Classifier

DECODER = Decoder()
CLASSIFIER = Classifier()
FEED = generate_feed(40, seed=11)
FHIR = [
    b'{"resourceType":"Observation","id":"o","status":"final","subject":{"reference":"Patient/1"},'
    b'"interpretation":[{"coding":[{"code":"HH"}]}],"valueQuantity":{"value":6.9}}',
    b'{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Patient","id":"1"}}]}',
]


def _every_entry_point(raw: bytes) -> None:
    """Each call may raise InputError and nothing else."""
    for call in (
        lambda: map_message(parse(raw)),
        lambda: CLASSIFIER.classify_hl7(raw),
        lambda: split_stream(raw),
        lambda: decode_document(raw),
        lambda: DECODER.hl7(raw, received_at="t", source="s"),
        lambda: DECODER.fhir(raw, received_at="t", source="s"),
    ):
        with contextlib.suppress(InputError):
            call()
    # decode_input never raises: errors come back in place of the message.
    for decoded in decode_input(raw, DECODER, received_at="t", source="s"):
        assert (decoded.envelope is None) != (decoded.error is None)
    # An ACK can always be built for whatever arrived.
    build_ack(AckContext.from_raw(raw), Outcome.REJECTED, control_id="A", timestamp="2026").to_bytes()


# These run many more examples than the profile's default: they are fast, and
# they are what found the two bugs pinned as @example below.
MANY = settings(max_examples=1500, deadline=None)


@MANY
@given(st.binary(max_size=600))
def test_arbitrary_bytes(raw: bytes) -> None:
    """Property: random bytes never crash a codec."""
    _every_entry_point(raw)


@MANY
@given(st.binary(max_size=300).map(lambda b: b"MSH|^~\\&|" + b))
def test_arbitrary_bytes_after_a_header_start(raw: bytes) -> None:
    """Property: bytes that begin like HL7 reach deeper into the parser, still total."""
    _every_entry_point(raw)


@st.composite
def _damaged(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(FEED + FHIR)))
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(raw) - 1)))
        if action == "flip" and raw:
            raw[pos] = draw(st.integers(0, 255))
        elif action == "cut":
            del raw[pos:]
        elif action == "insert":
            raw[pos:pos] = draw(
                st.sampled_from(
                    [b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", b"\\X", b"\x0b", b"\x1c", b"{", b'"', b"MSH|"]
                )
            )
        elif raw:
            del raw[pos]
    return bytes(raw)


@MANY
@given(_damaged())
@example(b"MSH\r|^~\\&|A|B|C|D|2026||DFT^P03|1|P|2.5\r")  # CR as the field separator
@example(b'{"resourceType":"\x80bservation"}')  # invalid UTF-8 inside a kept string
@example(b'{"resourceType":"Bundle","\x80ype":"batch","entry":[]}')  # ...inside a skipped key
def test_damaged_real_messages(raw: bytes) -> None:
    """Property: realistic messages with random damage never crash a codec."""
    _every_entry_point(raw)
