"""A patient record's snapshot bytes: encoded a slice of facts at a time, a long one read back held.

msgspec holds the interpreter for the whole of one call. A record of 30,000
facts (a patient merged with a long history, a chronic patient's years of
results) took 39 ms to decode in the activation's worker thread and 14 ms to
encode, and for that long no other thread ran: the event loop, which answers
every critical message, waited 27 ms. Here the facts are encoded a slice of
`SLICE_FACTS` per msgspec call, and between two slices the interpreter can be
handed over (`sys.setswitchinterval`: the node's `switch_interval_ms`).

A snapshot of `WHOLE_BYTES_MAX` or more is not decoded at all when read: its
facts stay held (`actors.HeldFacts`), decoded a slice at a time if something
reads them, and written back as they are when the record is snapshotted
again, so a long record that gains a few facts costs those facts, not its
history.

The bytes are exactly those every version of Vigil writes and reads: the
record with every fact in `facts` (a test holds them equal).
"""

from __future__ import annotations

from typing import Final

import msgspec

from actors import Fact, HeldFacts, PatientRecord

__all__ = ["SLICE_FACTS", "decode_record", "encode_record"]

SLICE_FACTS: Final = HeldFacts.SLICE_FACTS

_RECORD: Final = msgspec.msgpack.Decoder(PatientRecord)
_ENCODER: Final = msgspec.msgpack.Encoder()


class _Snapshot(msgspec.Struct, frozen=True):
    """`PatientRecord` as a snapshot holds it (the same fields, in the same order), its facts as bytes."""

    patient: str
    facts: msgspec.Raw
    last_lsn: int = 0
    merged_from: tuple[str, ...] = ()
    merged_into: str | None = None
    recent: tuple[Fact, ...] = ()


_SNAPSHOT: Final = msgspec.msgpack.Decoder(_Snapshot)


def encode_record(record: PatientRecord) -> bytes:
    """The snapshot bytes of a record (every fact in `facts`), a slice of facts per call to msgspec.

    Held facts are written as they were read, not decoded and encoded again.
    """
    decoded = (*record.sealed, *record.recent) if record.recent else record.sealed
    array = msgspec.Raw(HeldFacts.of_facts(record.held, decoded).array())
    return _ENCODER.encode(_Snapshot(record.patient, array, record.last_lsn, record.merged_from, record.merged_into))


def decode_record(data: bytes) -> PatientRecord:
    """A record from its snapshot bytes: decoded in one call, or its facts held if it is long.

    Raises:
        msgspec.DecodeError: the bytes are not a record's snapshot (held facts are checked when read).
    """
    if len(data) < HeldFacts.WHOLE_BYTES_MAX:
        return _RECORD.decode(data)
    snapshot = _SNAPSHOT.decode(data)
    return PatientRecord(
        snapshot.patient,
        recent=snapshot.recent,
        last_lsn=snapshot.last_lsn,
        merged_from=snapshot.merged_from,
        merged_into=snapshot.merged_into,
        held=HeldFacts.of_array(bytes(snapshot.facts)),
    )
