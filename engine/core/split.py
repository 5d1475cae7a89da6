"""Detecting an input's format and cutting it into messages.

One input (a file, stdin, a dropped file) may hold HL7 v2 messages with any
segment terminators, a batch file, MLLP frames, one FHIR JSON document, or an
NDJSON stream. `split_input` recognises which from the first bytes and returns
one `Piece` per message, each with its byte offset in the input, or the
framing error in its place, so a bad message never hides the good ones.
"""

from __future__ import annotations

from typing import final

import msgspec

from engine.core.errors import ErrorLocation, FormatError, FramingError, InputError
from engine.core.fhir import split_ndjson
from engine.core.hl7 import split_stream
from engine.core.mllp import MLLPDecoder
from engine.core.model import Kind

__all__ = ["Piece", "split_input"]

_BOM = b"\xef\xbb\xbf"
_HL7_STARTS = (b"MSH", b"FHS", b"BHS")


@final
class Piece(msgspec.Struct, frozen=True):
    """One message's bytes cut from an input, or why it could not be cut."""

    offset: int
    kind: Kind
    data: bytes = b""
    in_batch: bool = False
    error: InputError | None = None


def split_input(raw: bytes, max_message_bytes: int = 16 * 1024 * 1024) -> list[Piece]:
    """Cut one input into messages, detecting its format from the first bytes.

    A message over `max_message_bytes` is refused in its place (its bytes kept
    for quarantine), from every source: the limit is the node's, not MLLP's.
    """
    body = raw.removeprefix(_BOM)
    lead = body.lstrip(b" \t\r\n")
    start = len(raw) - len(lead)
    if not lead:
        return []
    if lead[:1] == b"\x0b":
        return _mllp(raw, max_message_bytes)
    if lead[:3] in _HL7_STARTS:
        return _bounded(_hl7(raw, 0), max_message_bytes)
    if lead[:1] in (b"{", b"["):
        return _bounded(_json(raw), max_message_bytes)
    return [
        Piece(
            start,
            Kind.HL7V2,
            error=FormatError(
                "input is not HL7 v2 (MSH, FHS or BHS), MLLP (0x0B) or FHIR JSON",
                ErrorLocation(byte_offset=start),
            ),
        )
    ]


def _bounded(pieces: list[Piece], max_message_bytes: int) -> list[Piece]:
    """Each piece over the limit refused in its place, with its bytes."""
    if all(len(p.data) <= max_message_bytes for p in pieces):
        return pieces
    return [
        p
        if len(p.data) <= max_message_bytes
        else msgspec.structs.replace(
            p,
            error=FramingError(
                f"message of {len(p.data):,} bytes is larger than {max_message_bytes:,} "
                "(ingest.message_bytes_max): refused",
                ErrorLocation(byte_offset=p.offset),
            ),
        )
        for p in pieces
    ]


def _hl7(raw: bytes, base: int) -> list[Piece]:
    try:
        stream = split_stream(raw)
    except InputError as exc:
        return [Piece(base, Kind.HL7V2, raw, error=exc.located(byte_offset=base))]
    return [Piece(base + off, Kind.HL7V2, data, stream.batch) for off, data in stream.messages]


def _mllp(raw: bytes, max_message_bytes: int) -> list[Piece]:
    decoder = MLLPDecoder(max_message_bytes)
    pieces: list[Piece] = []
    for item in [*decoder.feed(raw), *decoder.close()]:
        if isinstance(item, InputError):
            pieces.append(Piece(item.location.byte_offset or 0, Kind.HL7V2, error=item))
        elif item.payload.lstrip(b" \t\r\n")[:1] in (b"{", b"["):
            pieces.extend(msgspec.structs.replace(p, offset=p.offset + item.offset + 1) for p in _json(item.payload))
        else:
            pieces.extend(_hl7(item.payload, item.offset + 1))
    return pieces


def _json(raw: bytes) -> list[Piece]:
    lines = split_ndjson(raw)
    if len(lines) > 1 and _is_one_json_value(lines[0][1]):
        return [Piece(off, Kind.FHIR, line) for off, line in lines]
    return [Piece(0, Kind.FHIR, raw)]


def _is_one_json_value(line: bytes) -> bool:
    """True when a line is a whole JSON value: the mark of NDJSON, not pretty JSON."""
    line = line.removeprefix(_BOM).strip()
    if not (line.startswith(b"{") and line.endswith(b"}")):
        return False
    try:
        msgspec.json.decode(line)
    except msgspec.DecodeError:
        return False
    return True
