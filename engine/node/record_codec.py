"""A patient record's snapshot bytes, encoded and decoded a slice of facts at a time.

msgspec holds the interpreter for the whole of one call. A record of 30,000
facts (a patient merged with a long history, a chronic patient's years of
results) took 39 ms to decode in the activation's worker thread and 14 ms to
encode, and for that long no other thread ran: the event loop, which answers
every critical message, waited 27 ms. Here the facts go through msgspec in
slices of `SLICE_FACTS`, and between two slices the interpreter can be handed
over (`sys.setswitchinterval`: the node's `switch_interval_ms`). Only the
first pass of a decode, which finds where each fact begins, is one call:
about 4 ms for 30,000 facts.

The bytes are exactly those of `msgspec.msgpack.encode(record.for_snapshot())`,
the format every version of Vigil reads (a test holds them equal).
"""

from __future__ import annotations

import struct
from typing import Final

import msgspec

from actors import Fact, PatientRecord

__all__ = ["SLICE_FACTS", "decode_record", "encode_record"]

SLICE_FACTS: Final = 512  # about 0.6 ms of msgspec's time, encoded or decoded
# Bytes below which a record is decoded in one call (at most about 1.5 ms): finding where each fact
# begins costs about a quarter more (27 -> 35 ms for 30,000 facts), worth it only where one call would be long.
_WHOLE_BYTES_MAX: Final = 256 * 1024
_RECORD: Final = msgspec.msgpack.Decoder(PatientRecord)

_ENCODER: Final = msgspec.msgpack.Encoder()
_FACTS: Final = msgspec.msgpack.Decoder(tuple[Fact, ...])


class _Sliced(msgspec.Struct, frozen=True):
    """`PatientRecord` as encoded (the same fields, in the same order), its facts each left as bytes."""

    patient: str
    facts: list[msgspec.Raw]
    last_lsn: int = 0
    merged_from: tuple[str, ...] = ()
    merged_into: str | None = None
    recent: tuple[Fact, ...] = ()


class _Encoded(msgspec.Struct, frozen=True):
    """`PatientRecord` as encoded, its facts array given as bytes already encoded."""

    patient: str
    facts: msgspec.Raw
    last_lsn: int
    merged_from: tuple[str, ...]
    merged_into: str | None
    recent: tuple[Fact, ...]


_SLICED: Final = msgspec.msgpack.Decoder(_Sliced)


def encode_record(record: PatientRecord) -> bytes:
    """The snapshot bytes of a record (every fact sealed), a slice of facts per call to msgspec."""
    facts = record.facts
    if len(facts) <= 2 * SLICE_FACTS:
        return _ENCODER.encode(record.for_snapshot())
    slices = (facts[i : i + SLICE_FACTS] for i in range(0, len(facts), SLICE_FACTS))
    bodies = [_ENCODER.encode(part)[len(_array_header(len(part))) :] for part in slices]  # each one's header cut off
    array = msgspec.Raw(_array_header(len(facts)) + b"".join(bodies))
    return _ENCODER.encode(_Encoded(record.patient, array, record.last_lsn, record.merged_from, record.merged_into, ()))


def decode_record(data: bytes) -> PatientRecord:
    """A record from its snapshot bytes, a slice of facts per call to msgspec.

    Raises:
        msgspec.DecodeError: the bytes are not a record's snapshot.
    """
    if len(data) < _WHOLE_BYTES_MAX:
        return _RECORD.decode(data)
    sliced = _SLICED.decode(data)
    raws = sliced.facts
    facts: list[Fact] = []
    for start in range(0, len(raws), SLICE_FACTS):  # a loop of its own: where the interpreter may be handed over
        facts.extend(_FACTS.decode(_ENCODER.encode(raws[start : start + SLICE_FACTS])))  # those facts' array
    return PatientRecord(
        sliced.patient,
        tuple(facts),
        sliced.last_lsn,
        sliced.merged_from,
        sliced.merged_into,
        sliced.recent,
    )


def _array_header(count: int) -> bytes:
    """The MessagePack array header for `count` items, in the shortest form (as msgspec writes it)."""
    if count < 16:
        return bytes((0x90 | count,))
    if count < 1 << 16:
        return b"\xdc" + struct.pack(">H", count)
    return b"\xdd" + struct.pack(">I", count)
