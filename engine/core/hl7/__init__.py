"""HL7 v2: parsing, paths, escapes, batches, ACKs, and mapping to the model (pure)."""

from engine.core.hl7.ack import AckContext, Outcome, build_ack
from engine.core.hl7.batch import HL7Stream, split_stream
from engine.core.hl7.encoding import (
    DEFAULT_DELIMITERS,
    CharsetDefaults,
    Delimiters,
    codec_for_charset,
    escape,
    resolve_charset,
    unescape,
)
from engine.core.hl7.mapping import Mapped, map_message, message_id, patient_key
from engine.core.hl7.message import NULL, Message, Path, Segment, parse, parse_path
from engine.core.hl7.scan import Header, read_header, segment_fields
from engine.core.hl7.timestamp import to_iso

__all__ = [
    "DEFAULT_DELIMITERS",
    "NULL",
    "AckContext",
    "CharsetDefaults",
    "Delimiters",
    "HL7Stream",
    "Header",
    "Mapped",
    "Message",
    "Outcome",
    "Path",
    "Segment",
    "build_ack",
    "codec_for_charset",
    "escape",
    "map_message",
    "message_id",
    "parse",
    "parse_path",
    "patient_key",
    "read_header",
    "resolve_charset",
    "segment_fields",
    "split_stream",
    "to_iso",
    "unescape",
]
