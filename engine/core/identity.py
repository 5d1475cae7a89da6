"""What makes two messages the same message: a content digest beside the id.

A message's id (HL7: sending application + facility + MSH-10) is what the
sender names it by, and senders reuse ids in the wild: counters that reset,
test systems, sample feeds that number every message `1`. Deduplicating on the
id alone acknowledged such a message and threw it away. So a duplicate is the
same id *and* the same content; the same id with other content is a new
message (stored, acknowledged, and counted as "control id reused").

The digest is a 64-bit BLAKE2b of the canonical content, never 0 (0 means
"unknown": records written before digests existed). Canonical means: what a
resend may legitimately change is left out.

- HL7 v2: the segment terminator (`\\r`, `\\r\\n` or `\\n`; a file and an MLLP
  feed of the same message differ there), empty segments, and MSH-7 (the time
  of the message: some interfaces stamp it anew on every resend).
- FHIR: key order and whitespace (the JSON is re-encoded with sorted keys),
  and a Bundle's `timestamp` and `meta` (the same resend rule as MSH-7).

64 bits are enough: a digest only has to tell apart the few contents sent
under one id, where a collision is about one in 10^19.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec

__all__ = ["fhir_digest", "hl7_digest", "json_digest"]

_SEGMENT_ENDS = re.compile(rb"(?:\r\n|\r|\n)+")


def _digest(data: bytes) -> int:
    value = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
    return value or 1  # 0 stands for "unknown"


def hl7_digest(raw: bytes) -> int:
    """The digest of an HL7 v2 message, MSH-7 and segment terminators left out.

    On the path of every message: the common shape (CR ends, no empty
    segment) is hashed in place, in two pieces around MSH-7, without a copy.
    """
    body = _SEGMENT_ENDS.sub(b"\r", raw) if b"\n" in raw or b"\r\r" in raw else raw
    body = body.strip(b"\r")
    digest = hashlib.blake2b(digest_size=8)
    seventh = _msh7(body)
    if seventh is None:
        digest.update(body)
    else:
        digest.update(body[: seventh[0]])
        digest.update(body[seventh[1] :])
    return int.from_bytes(digest.digest(), "big") or 1  # 0 stands for "unknown"


def _msh7(body: bytes) -> tuple[int, int] | None:
    """Where MSH-7's value starts and ends, if the message has one."""
    if body[:3] != b"MSH" or len(body) < 4:
        return None
    sep, end = body[3], body.find(b"\r")
    end = len(body) if end < 0 else end
    start = 3
    for _ in range(5):  # past MSH-2..MSH-6: the 6th separator opens MSH-7
        start = body.find(sep, start + 1, end)
        if start < 0:
            return None
    stop = body.find(sep, start + 1, end)
    return start + 1, end if stop < 0 else stop


def json_digest(value: Any) -> int:
    """The digest of a decoded JSON value, keys sorted."""
    return _digest(msgspec.json.encode(value, order="sorted"))


def fhir_digest(raw: bytes) -> int:
    """The digest of a FHIR JSON document; of a Bundle, `timestamp` and `meta` left out.

    Text that is not JSON (it was refused before reaching here, or an element
    the resource decoders skip defeats a generic decode) digests as its bytes.
    """
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return _digest(raw)
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        value = {k: v for k, v in value.items() if k not in ("timestamp", "meta")}
    return json_digest(value)
