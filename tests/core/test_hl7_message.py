"""The HL7 v2 message: parsing, field access by path, building, round trip, errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.errors import CharsetError, EscapeError, HeaderError, HL7Error, MissingFieldError
from engine.core.hl7 import NULL, CharsetDefaults, Message, parse, parse_path
from tests.harness.helpers import MSH_ORU, PID, hl7, oru


def test_msh_fields_follow_hl7_numbering() -> None:
    """MSH-1 is the field separator and MSH-2 the encoding characters, as in the standard."""
    msg = parse(oru("OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F"))
    assert msg.get("MSH-1") == "|"
    assert msg.get("MSH-2") == "^~\\&"
    assert msg.get("MSH-9") == "ORU"
    assert msg.get("MSH-9.2") == "R01"
    assert msg.message_type == "ORU^R01"
    assert msg.control_id == "MSG0001"
    assert msg.version == "2.5.1"


def test_paths_reach_repetitions_components_and_subcomponents() -> None:
    """`PID-3[2].1`, `OBX[3]-5` and subcomponent paths address what they say."""
    msg = parse(
        oru(
            "OBX|1|NM|A^Alpha||1",
            "OBX|2|NM|B^Beta||2",
            "OBX|3|NM|C^Gamma||3|mg&milligram",
        )
    )
    assert msg.get("PID-3") == "12345"
    assert msg.get("PID-3[2].1") == "MRN42"
    assert msg.get("PID-3[2].4") == "GENHOSP"
    assert msg.get("PID-3[2].5") == "MR"
    assert msg.get("PID-5.2") == "Jane"
    assert msg.get("OBX[3]-5") == "3"
    assert msg.get("OBX[2]-3.2") == "Beta"
    assert msg.get("OBX[3]-6.1.2") == "milligram"
    assert msg.get("OBX[3]-6") == "mg"


def test_absent_empty_and_null_are_different() -> None:
    """Beyond the segment is absent (None); `||` is empty; `|""|` is the HL7 null."""
    msg = parse(hl7(MSH_ORU, 'PID|1||MRN1^^^H^MR||""||19700101'))
    assert msg.get("PID-2") == ""
    assert msg.get("PID-5") == NULL
    assert msg.get("PID-30") is None
    assert msg.get("PID-3[5]") is None
    assert msg.get("PID-3.9") is None
    assert msg.get("ZZZ-1") is None
    assert msg.get("PID[2]-1") is None


def test_any_declared_delimiters_are_honoured() -> None:
    """Field, component, repetition, escape and subcomponent characters come from MSH-1/2."""
    raw = hl7(
        "MSH#$*@!#LAB#H#V#H#20261124##ORU$R01#C1#P#2.5.1",
        "PID#1##A1$$$H$MR*B2$$$H$PI##Doe$Jane",
        "OBX#1#ST#X$Note##a@F@b@S@c@T@d@R@e@E@f#u1!u2",
    )
    msg = parse(raw)
    assert msg.delimiters.field == "#"
    assert msg.message_type == "ORU^R01"
    assert msg.get("PID-3[2].1") == "B2"
    assert msg.get("PID-5.2") == "Jane"
    assert msg.get("OBX-5") == "a#b$c!d*e@f"
    assert msg.get("OBX-6.1.2") == "u2"
    assert msg.to_bytes() == raw


def test_v27_truncation_character() -> None:
    """A fifth encoding character declares truncation; `\\P\\` stands for it."""
    msg = parse(hl7("MSH|^~\\&#|A|B|C|D|20261124||ADT^A08|C1|P|2.7", "PID|1||M1^^^H^MR||Lon\\P\\g#"))
    assert msg.delimiters.truncation == "#"
    assert msg.get("PID-5") == "Lon#g#"


@pytest.mark.parametrize("terminator", ["\r", "\n", "\r\n"])
def test_segment_terminators_read_alike_and_round_trip(terminator: str) -> None:
    """CR, LF and CRLF terminators give the same fields and serialize back exactly."""
    raw = oru("OBX|1|NM|2823-3^K^LN||6.9|mmol/L|3.5-5.1|HH|||F", "ZPX|custom|data").replace(b"\r", terminator.encode())
    msg = parse(raw)
    assert msg.terminator == terminator
    assert msg.get("OBX-8") == "HH"
    assert msg.get("ZPX-2") == "data"
    assert [s.id for s in msg] == ["MSH", "PID", "ORC", "OBR", "OBX", "ZPX"]
    assert msg.to_bytes() == raw


def test_bom_and_trailing_terminators_round_trip() -> None:
    """A UTF-8 BOM and any number of trailing terminators are written back."""
    raw = b"\xef\xbb\xbf" + hl7(MSH_ORU, PID) + b"\r"
    msg = parse(raw)
    assert msg.bom
    assert msg.trailing == 2
    assert msg.to_bytes() == raw
    no_end = hl7(MSH_ORU, PID)[:-1]
    assert parse(no_end).to_bytes() == no_end


def test_msh18_character_sets() -> None:
    """ISO-8859-1 and UTF-8 are read as declared; the round trip keeps the bytes."""
    latin = "MSH|^~\\&|A|B|C|D|20261124||ADT^A08|C1|P|2.5||||||8859/1\rPID|1||M1^^^H^MR||Mller\r"
    raw = latin.replace("Mller", "M\xfcller").encode("latin-1")
    msg = parse(raw)
    assert msg.codec == "latin-1"
    assert msg.get("PID-5") == "Müller"
    assert msg.to_bytes() == raw
    utf8 = raw.decode("latin-1").replace("8859/1", "UNICODE UTF-8").encode("utf-8")
    assert parse(utf8).get("PID-5") == "Müller"


def test_a_legacy_sender_named_in_the_charset_defaults_is_read_in_its_set() -> None:
    """No MSH-18: the sender's configured character set (here ISO-8859-1) reads it; the round trip is exact."""
    raw = b"MSH|^~\\&|A|B|C|D|20261124||ADT^A08|C1|P|2.3\rPID|1||M1^^^H^MR||Ren\xe9\r"
    msg = parse(raw, CharsetDefaults(senders={"A|B": "latin-1"}))
    assert msg.get("PID-5") == "René"
    assert msg.invalid_text is None
    assert msg.to_bytes() == raw
    assert parse(raw, CharsetDefaults(default="cp1252")).get("PID-5") == "René"


def test_one_stray_byte_never_re_decodes_valid_utf8_as_latin1() -> None:
    """A stray 0xff in an NTE: the name stays "Müller, Zoë"; the byte is replaced and located (NTE-3)."""
    raw = "MSH|^~\\&|A|B|C|D|20261124||ADT^A08|C1|P|2.5\rPID|1||M1^^^H^MR||Müller^Zoë\rNTE|1||ok \xff\r"
    data = raw.encode("utf-8").replace(b"\xc3\xbf", b"\xff")
    msg = parse(data)
    assert msg.get("PID-5.1") == "Müller"
    assert msg.get("PID-5.2") == "Zoë"
    assert msg.get("NTE-3") == "ok \ufffd"
    assert msg.invalid_text is not None
    assert (msg.invalid_text.charset, msg.invalid_text.count) == ("utf-8", 1)
    first = msg.invalid_text.first
    assert (first.segment, first.field, first.byte_offset) == ("NTE", 3, data.index(b"\xff"))


def test_declared_charset_violations_are_typed_errors() -> None:
    """Bytes outside the declared set, or an unknown set, name the offset or field."""
    raw = b"MSH|^~\\&|A|B|C|D|20261124||ADT^A08|C1|P|2.5||||||ASCII\rPID|1||M1^^^H^MR||Ren\xe9\r"
    with pytest.raises(CharsetError) as info:
        parse(raw)
    assert info.value.location.byte_offset == raw.index(b"\xe9")
    assert (info.value.location.segment, info.value.location.field) == ("PID", 5)
    with pytest.raises(CharsetError) as unknown:
        parse(raw.replace(b"ASCII", b"EBCDIC"))
    assert unknown.value.location.field == 18


@pytest.mark.parametrize(
    ("raw", "error", "field"),
    [
        (b"PID|1||M1\r", HeaderError, None),
        (b"MSH|^~\r", HeaderError, None),
        (b"MSH|^~\\|A|B\r", HeaderError, 2),
        (b"MSH|^^\\&|A|B|C|D|T||ADT^A01|1|P|2.5\r", HeaderError, 2),
        (b"MSH|^~a&|A|B|C|D|T||ADT^A01|1|P|2.5\r", HeaderError, 2),
        (b"MSH|^~\\&|A|B|C|D|T||||P|2.5\r", MissingFieldError, 9),
        (b"MSH|^~\\&|A|B|C|D|T||ADT^A01||P|2.5\r", MissingFieldError, 10),
    ],
)
def test_malformed_headers_are_typed_errors(raw: bytes, error: type[HL7Error], field: int | None) -> None:
    """No MSH, truncated MSH, bad encoding characters, or no type/control id."""
    with pytest.raises(error) as info:
        parse(raw)
    assert info.value.location.field == field


def test_a_line_without_segment_id_names_its_offset() -> None:
    """A broken line is refused with its byte offset, without quoting its text."""
    raw = hl7(MSH_ORU, PID, "this is a broken note line")
    with pytest.raises(HL7Error) as info:
        parse(raw)
    assert info.value.location.byte_offset == raw.index(b"this")
    assert "broken" not in str(info.value)


def test_bad_escape_is_reported_with_segment_and_field() -> None:
    """An unterminated escape fails when read, naming segment and field."""
    msg = parse(hl7(MSH_ORU, PID, "OBX|1|ST|X||bad \\F value"))
    with pytest.raises(EscapeError) as info:
        msg.get("OBX-5")
    assert (info.value.location.segment, info.value.location.field) == ("OBX", 5)


def test_set_escapes_and_pads() -> None:
    """Writing a value escapes delimiters and adds the missing fields and components."""
    msg = parse(hl7(MSH_ORU, "PID|1"))
    msg.set("PID-5[2].3", "A|B^C&D~E\\F")
    msg.set("PID-13", "line1\nline2")
    again = parse(msg.to_bytes())
    assert again.get("PID-5[2].3") == "A|B^C&D~E\\F"
    assert again.get("PID-13") == "line1\nline2"
    assert again.segment("PID") is not None
    assert again.get("PID-1") == "1"


def test_new_message_from_lines() -> None:
    """`Message.new` builds from lines; `append` adds segments."""
    msg = Message.new([MSH_ORU])
    msg.append("PID|1||M9^^^H^MR")
    assert parse(msg.to_bytes()).get("PID-3.1") == "M9"
    assert msg.to_bytes().endswith(b"\r")


@pytest.mark.parametrize("path", ["PID", "PID-0", "pid-3", "PID-3[0]", "PID-3.x", "P-3"])
def test_malformed_paths_are_programming_errors(path: str) -> None:
    """A path is code, not input: a bad one raises ValueError at once."""
    with pytest.raises(ValueError, match="not an HL7 path"):
        parse_path(path)


_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=30)


@given(st.lists(st.tuples(st.integers(1, 12), st.integers(1, 3), st.integers(1, 4), _text), max_size=12))
def test_set_then_parse_gives_back_every_value(writes: list[tuple[int, int, int, str]]) -> None:
    """Property: whatever text is written at a path is read back after a round trip."""
    msg = parse(hl7(MSH_ORU, "ZTS|1"))
    expected: dict[str, str] = {}
    for field, rep, comp, value in writes:
        path = f"ZTS-{field + 1}[{rep}].{comp}"
        msg.set(path, value)
        expected[path] = value
    again = parse(msg.to_bytes())
    for path, value in expected.items():
        assert value == again.get(path)
