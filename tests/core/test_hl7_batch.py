"""Cutting HL7 v2 streams: concatenated messages and FHS/BHS batch files."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.errors import HL7Error
from engine.core.hl7 import parse, split_stream
from engine.core.hl7.batch import boundaries
from tests.harness.helpers import MSH_ADT, MSH_ORU, PID, hl7


def _batch(count_declared: int = 2) -> bytes:
    return hl7(
        "FHS|^~\\&|BILL|GENHOSP|||20261124",
        "BHS|^~\\&|BILL|GENHOSP|||20261124",
        MSH_ORU,
        PID,
        MSH_ADT,
        PID,
        f"BTS|{count_declared}",
        "FTS|1",
    )


def test_batch_file_is_cut_into_its_messages() -> None:
    """Each MSH..segment run is one message, with its offset; the batch is flagged."""
    raw = _batch()
    stream = split_stream(raw)
    assert stream.batch
    assert [off for off, _ in stream.messages] == [raw.index(b"MSH|^~\\&|LAB"), raw.index(b"MSH|^~\\&|ADT")]
    assert [parse(data).message_type for _, data in stream.messages] == ["ORU^R01", "ADT^A01"]


def test_batch_trailer_count_mismatch_is_refused() -> None:
    """BTS-1 says 3 but the batch holds 2: the file was cut short; refuse it all."""
    with pytest.raises(HL7Error) as info:
        split_stream(_batch(3))
    assert (info.value.location.segment, info.value.location.field) == ("BTS", 1)


@pytest.mark.parametrize("declared", ["1", "2", ""])
def test_a_file_header_without_a_batch_header_is_one_implicit_batch(declared: str) -> None:
    """FHS, MSH..., FTS: read as one batch; FTS-1 may count that batch or its messages."""
    raw = hl7("FHS|^~\\&|BILL|GENHOSP|||20261124", MSH_ORU, PID, MSH_ADT, PID, f"FTS|{declared}")
    stream = split_stream(raw)
    assert stream.batch
    assert [parse(data).message_type for _, data in stream.messages] == ["ORU^R01", "ADT^A01"]


def test_an_implicit_batch_still_refuses_a_count_that_fits_nothing() -> None:
    """FTS-1 = 5 for one implicit batch of two messages: cut short or spliced."""
    raw = hl7("FHS|^~\\&|BILL|GENHOSP|||20261124", MSH_ORU, PID, MSH_ADT, PID, "FTS|5")
    with pytest.raises(HL7Error) as info:
        split_stream(raw)
    assert (info.value.location.segment, info.value.location.field) == ("FTS", 1)


def test_concatenated_messages_with_any_terminator() -> None:
    """Several messages back to back, LF-terminated, are cut at each MSH."""
    raw = hl7(MSH_ORU, PID, MSH_ADT, PID, MSH_ORU, terminator="\n")
    stream = split_stream(raw)
    assert not stream.batch
    assert len(stream.messages) == 3
    assert b"".join(data for _, data in stream.messages) == raw


def test_junk_before_the_first_message_stays_with_it() -> None:
    """Leading junk is not dropped: it makes the first message fail visibly."""
    raw = b"garbage\r" + hl7(MSH_ORU, PID)
    stream = split_stream(raw)
    assert stream.messages[0][0] == 0
    assert stream.messages[0][1].startswith(b"garbage")


def test_empty_input_has_no_messages() -> None:
    """Whitespace only: nothing to cut."""
    assert split_stream(b"\r\n  ").messages == []


# The single pattern the boundaries were found with before (a look-behind, tried at every byte): the oracle.
_ONE_PATTERN = re.compile(rb"(?:\A(?:\xef\xbb\xbf)?|(?<=[\r\n]))(MSH|FHS|BHS|BTS|FTS)(?=[^A-Za-z0-9\r\n])")
_PARTS = st.sampled_from(
    [
        b"MSH|^~\\&|A",
        b"FHS|^~\\&",
        b"BHS|^~\\&",
        b"BTS|1",
        b"FTS|1",
        b"\r",
        b"\n",
        b"\xef\xbb\xbf",
        b"PID|1",
        b"MSHX",
        b"x",
    ]
)


@given(st.lists(_PARTS, max_size=30).map(b"".join))
def test_boundaries_are_those_of_the_one_pattern_they_replaced(raw: bytes) -> None:
    assert boundaries(raw) == [(m.start(1), m.group(1)) for m in _ONE_PATTERN.finditer(raw)]
