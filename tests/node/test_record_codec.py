"""A record's snapshot bytes, a slice of facts at a time: the same bytes, the same record, any size; long ones held."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import Fact, HeldFacts, PatientRecord
from engine.core.decode import Decoder
from engine.core.feedgen import generate_feed
from engine.core.model import Event
from engine.node.record_codec import SLICE_FACTS, decode_record, encode_record


def _pool() -> list[tuple[Event, ...]]:
    decoder = Decoder()
    return [decoder.hl7(raw, received_at="t", source="s").events for raw in generate_feed(200, seed=11, patients=1)]


POOL = _pool()
_WHOLE = msgspec.msgpack.Decoder(PatientRecord)


class _Format(msgspec.Struct, frozen=True):
    """A snapshot as every version of Vigil has written and read it: every fact in `facts`."""

    patient: str
    facts: tuple[Fact, ...]
    last_lsn: int = 0
    merged_from: tuple[str, ...] = ()
    merged_into: str | None = None
    recent: tuple[Fact, ...] = ()


def _written(record: PatientRecord) -> bytes:
    """The snapshot bytes of `record` in that format, in one call to msgspec."""
    return msgspec.msgpack.encode(
        _Format(record.patient, record.facts, record.last_lsn, record.merged_from, record.merged_into)
    )


def _record(facts: int, *, merged: bool = False, step: int = 1) -> PatientRecord:
    """A record with at least `facts` facts (a message may carry several events), in two parts as `apply` makes them."""
    record = PatientRecord.empty("GENHOSP|MRN000001")
    if merged:
        record = msgspec.structs.replace(record, merged_from=("GENHOSP|MRN000002",), merged_into="GENHOSP|MRN000003")
    lsn = 0
    while record.fact_count < facts:
        lsn += step
        record = record.apply(lsn, f"2026-11-24T08:{lsn % 60:02d}:00Z", f"m{lsn}", POOL[lsn % len(POOL)])
    return record


@pytest.mark.parametrize("facts", [0, 1, 15, 16, 2 * SLICE_FACTS, 2 * SLICE_FACTS + 1, 3 * SLICE_FACTS - 1, 5000])
def test_the_bytes_are_those_of_one_call_and_read_back_as_the_record(facts: int) -> None:
    """What older versions write and read: the sliced encoding is byte for byte msgspec's of the whole record."""
    record = _record(facts, merged=facts % 2 == 1)
    data = encode_record(record)
    assert data == _written(record)
    assert decode_record(data) == record
    assert decode_record(data).recent == ()  # every fact sealed, as a snapshot holds them


def test_a_large_record_is_read_back_held_and_decoded_in_slices_to_the_same_record() -> None:
    """Past the size decoded in one call: the facts are held as bytes; read, they are the record's, in order."""
    record = _record(6000, merged=True)
    data = encode_record(record)
    assert len(data) > 256 * 1024  # the held path, not the one call
    back = decode_record(data)
    assert back.held is not None
    assert back.sealed == ()
    assert back.fact_count == record.fact_count
    assert back == _WHOLE.decode(data) == record
    assert [f.lsn for f in back.unheld().facts] == [f.lsn for f in record.facts]
    assert back.merged_from == ("GENHOSP|MRN000002",)
    assert back.merged_into == "GENHOSP|MRN000003"


def test_a_held_record_that_gained_facts_is_written_without_decoding_what_it_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A long record back for a few new messages: its snapshot costs those facts, not its history."""
    record = _record(6000)
    back = decode_record(encode_record(record))
    for lsn in range(record.last_lsn + 1, record.last_lsn + 300):  # past RECENT_MAX: some sealed, some recent
        record = record.apply(lsn, "2026-11-25T08:00:00Z", f"m{lsn}", POOL[lsn % len(POOL)])
        back = back.apply(lsn, "2026-11-25T08:00:00Z", f"m{lsn}", POOL[lsn % len(POOL)])
    assert back.held is not None

    def refuse(_: HeldFacts) -> tuple[Fact, ...]:
        raise AssertionError("the held facts were decoded")

    monkeypatch.setattr(HeldFacts, "decode", refuse)
    assert encode_record(back) == _written(record)


def test_a_snapshot_written_before_records_had_two_parts_is_read() -> None:
    """Snapshots from before the split have no `recent`: the sliced decode reads them too."""
    record = _record(6000)
    old = msgspec.msgpack.decode(msgspec.msgpack.encode(record.for_snapshot()))
    del old["recent"]
    assert decode_record(msgspec.msgpack.encode(old)) == record


def test_bytes_that_are_not_a_record_are_refused() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_record(b"\x93\x01\x02")
    with pytest.raises(msgspec.DecodeError):
        decode_record(msgspec.msgpack.encode({"patient": "P", "facts": 7, "pad": b"x" * 300_000}))  # not an array
    held = decode_record(msgspec.msgpack.encode({"patient": "P", "facts": [1] * 300_000}))  # held, and wrong
    with pytest.raises(msgspec.DecodeError):
        held.unheld()  # refused when read


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 4 * SLICE_FACTS), st.integers(1, 7), st.booleans())
def test_any_record_round_trips(facts: int, step: int, merged: bool) -> None:
    record = _record(facts, merged=merged, step=step)
    data = encode_record(record)
    assert data == _written(record)
    assert decode_record(data) == record
