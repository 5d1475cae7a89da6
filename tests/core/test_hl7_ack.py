"""ACK and NAK building: original and enhanced modes, ERR segments, unparseable input."""

from __future__ import annotations

import pytest

from engine.core.errors import CharsetError, ErrorLocation, HeaderError, InputError, MissingFieldError
from engine.core.hl7 import AckContext, Outcome, build_ack, parse
from tests.harness.helpers import PID, hl7, oru

MSH_ENHANCED = "MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261124101500||ORU^R01^ORU_R01|MSG0009|P|2.5.1|||AL|NE"


def _ack(ctx: AckContext, outcome: Outcome, error: InputError | None = None) -> str:
    msg = build_ack(ctx, outcome, control_id="ACK1", timestamp="20261124101501", error=error)
    return msg.to_text()


def test_original_mode_accept() -> None:
    """AA echoes MSH-10 in MSA-2 and swaps sender and receiver."""
    ctx = AckContext.from_message(parse(oru()))
    ack = parse(build_ack(ctx, Outcome.ACCEPTED, control_id="ACK1", timestamp="20261124101501").to_bytes())
    assert ack.get("MSA-1") == "AA"
    assert ack.get("MSA-2") == "MSG0001"
    assert (ack.get("MSH-3"), ack.get("MSH-5")) == ("VIGIL", "LAB")
    assert ack.message_type == "ACK^R01"
    assert ack.get("MSH-10") == "ACK1"
    assert ack.get("MSH-12") == "2.5.1"
    assert ack.segment("ERR") is None


@pytest.mark.parametrize(
    ("outcome", "code"), [(Outcome.ACCEPTED, "CA"), (Outcome.RETRY, "CE"), (Outcome.REJECTED, "CR")]
)
def test_enhanced_mode_codes(outcome: Outcome, code: str) -> None:
    """MSH-15/16 valued: commit ACK codes CA/CE/CR."""
    ctx = AckContext.from_message(parse(hl7(MSH_ENHANCED, PID)))
    assert ctx.enhanced
    assert f"MSA|{code}|MSG0009" in _ack(ctx, outcome)


@pytest.mark.parametrize(
    ("mode", "accepted", "refused"),
    [("AL", True, True), ("NE", False, False), ("ER", False, True), ("SU", True, False), ("", True, True)],
)
def test_msh15_decides_whether_an_ack_is_sent(mode: str, *, accepted: bool, refused: bool) -> None:
    """AL always, NE never, ER only on error, SU only on success."""
    ctx = AckContext(accept_ack_type=mode, application_ack_type="AL")
    assert ctx.wants_ack(Outcome.ACCEPTED) is accepted
    assert ctx.wants_ack(Outcome.REJECTED) is refused


def test_original_mode_always_acks() -> None:
    """Without MSH-15/16, every message gets an ACK."""
    assert AckContext().wants_ack(Outcome.REJECTED)


def test_reject_names_segment_field_and_reason_v25() -> None:
    """v2.5+: ERR-2 location, ERR-3 code from table 0357, ERR-4 severity, ERR-8 text."""
    ctx = AckContext.from_message(parse(oru()))
    err = MissingFieldError("ORU^R01 requires a patient identifier", ErrorLocation(segment="PID", field=3))
    ack = parse(build_ack(ctx, Outcome.REJECTED, control_id="A", timestamp="2026", error=err).to_bytes())
    assert ack.get("MSA-1") == "AR"
    assert ack.get("ERR-2.1") == "PID"
    assert ack.get("ERR-2.3") == "3"
    assert ack.get("ERR-3.1") == "101"
    assert ack.get("ERR-3.3") == "HL70357"
    assert ack.get("ERR-4") == "E"
    assert ack.get("ERR-8") == "ORU^R01 requires a patient identifier"


def test_reject_before_v25_uses_err1() -> None:
    """Before v2.5 the location and code travel in ERR-1."""
    raw = hl7("MSH|^~\\&|A|B|C|D|2026||ADT^A01|X1|P|2.3", PID)
    ctx = AckContext.from_message(parse(raw))
    err = HeaderError("bad", ErrorLocation(segment="MSH", field=9))
    ack = parse(build_ack(ctx, Outcome.REJECTED, control_id="A", timestamp="2026", error=err).to_bytes())
    assert ack.get("ERR-1.1") == "MSH"
    assert ack.get("ERR-1.3") == "9"
    assert ack.get("ERR-1.4.1") == "100"


def test_ack_for_a_message_that_did_not_parse() -> None:
    """A broken message is still answered from whatever header can be read."""
    raw = hl7("MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|2026||ORU^R01|BROKEN1|P|2.5.1", "not a segment")
    with pytest.raises(InputError) as info:
        parse(raw)
    ctx = AckContext.from_raw(raw)
    ack = parse(build_ack(ctx, Outcome.REJECTED, control_id="A", timestamp="2026", error=info.value).to_bytes())
    assert ack.get("MSA-2") == "BROKEN1"
    assert ack.get("MSA-1") == "AR"


def test_ack_for_garbage_has_empty_msa2() -> None:
    """No MSH at all: an ACK with empty MSA-2, all HL7 allows."""
    ctx = AckContext.from_raw(b"\x00\x01 not hl7")
    ack = parse(build_ack(ctx, Outcome.REJECTED, control_id="A", timestamp="2026").to_bytes())
    assert ack.get("MSA-2") == ""


def test_ack_keeps_the_senders_delimiters_and_escapes_text() -> None:
    """The ACK uses the message's delimiters; reason text is escaped."""
    raw = hl7("MSH#$*@!#A#B#C#D#2026##ORU$R01#Z9#P#2.5.1", "PID#1##M1$$$H$MR")
    ctx = AckContext.from_message(parse(raw))
    err = HeaderError("bad value # and $ here", ErrorLocation(segment="PID", field=3))
    text = build_ack(ctx, Outcome.REJECTED, control_id="A", timestamp="2026", error=err).to_text()
    assert text.startswith("MSH#$*@!#")
    assert parse(text.encode()).get("ERR-8") == "bad value # and $ here"


def test_a_byte_outside_the_declared_utf8_is_refused_naming_segment_field_and_offset() -> None:
    """MSH-18 says UTF-8 and PID-5 holds 0xff: the ERR names PID-5, and its text the byte offset."""
    raw = b"MSH|^~\\&|A|B|C|D|20261124||ADT^A08|C1|P|2.5||||||UNICODE UTF-8\rPID|1||M1^^^H^MR||M\xfcller\r"
    with pytest.raises(CharsetError) as refused:
        parse(raw)
    ack = build_ack(AckContext.from_raw(raw), Outcome.REJECTED, control_id="A1", timestamp="2026", error=refused.value)
    assert (ack.get("ERR-2.1"), ack.get("ERR-2.3")) == ("PID", "5")
    offset = raw.index(b"\xfc")
    assert f"offset {offset}" in (ack.get("ERR-8") or "")


@pytest.mark.parametrize(("version", "err"), [("2.5.1", True), ("2.3", False)])
def test_an_accepted_message_with_a_warning_gets_err_severity_w_from_v25(version: str, err: bool) -> None:
    """AA with ERR-4 = W (v2.5 on); before v2.5, where ERR has no severity, MSA-3's text alone says it."""
    raw = hl7(f"MSH|^~\\&|A|B|C|D|20261124||ADT^A08|C1|P|{version}", PID)
    warning = CharsetError("1 byte sequence(s) not valid utf-8 were replaced", ErrorLocation(segment="PID", field=5))
    ack = build_ack(AckContext.from_raw(raw), Outcome.ACCEPTED, control_id="A1", timestamp="2026", error=warning)
    assert ack.get("MSA-1") == "AA"
    assert "replaced" in (ack.get("MSA-3") or "")
    assert (ack.segment("ERR") is not None) is err
    if err:
        assert (ack.get("ERR-4"), ack.get("ERR-2.1"), ack.get("ERR-2.3")) == ("W", "PID", "5")
