"""What came of one delivery attempt, and how a destination's HL7 answer is read."""

from __future__ import annotations

import enum
from typing import Final, final

import msgspec

from engine.core.errors import HeaderError
from engine.core.hl7 import read_header, segment_fields

__all__ = ["Attempt", "Verdict", "read_answer"]

_ANSWER_CHARS: Final = 400  # of a refusal's text kept for the operator
_MSA_ERR: Final = frozenset({b"MSA", b"ERR"})


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # AE/CE, a timeout, an answer that cannot be read: the same message again, later
    REFUSED = "refused"  # AR/CR: sending it again will not help
    UNREACHABLE = "unreachable"  # no connection (or it broke before an answer): retried as soon as one is made


@final
class Attempt(msgspec.Struct, frozen=True):
    """One attempt's verdict; `code` is MSA-1 or a short reason, `answer` the destination's text."""

    verdict: Verdict
    code: str
    answer: str = ""
    maybe_received: bool = False  # the destination may have it although it did not say so (a resend may duplicate)


def read_answer(payload: bytes, control_id: bytes) -> Attempt:
    """An HL7 ACK's verdict: MSA-1 AA/CA delivered, AE/CE retry, AR/CR refused.

    An answer that is no ACK, or acknowledges another control id, is a
    connection out of step: retried (after a reconnect) as a timeout would be.
    """
    try:
        header = read_header(payload)
    except HeaderError:
        return Attempt(Verdict.RETRY, "unreadable", "the answer is not an HL7 message", maybe_received=True)
    segments = segment_fields(payload, _MSA_ERR, header.field)
    msa = next((fields for seg, fields in segments if seg == b"MSA"), None)
    if msa is None or len(msa) < 2:
        return Attempt(Verdict.RETRY, "unreadable", "the answer has no MSA segment", maybe_received=True)
    code = msa[1].decode("latin-1").strip().upper()
    acked = msa[2] if len(msa) > 2 else b""
    if control_id and acked != control_id:
        return Attempt(Verdict.RETRY, "out-of-step", "the answer acknowledges another message", maybe_received=True)
    text = " | ".join(
        part.decode("utf-8", errors="replace")
        for part in (msa[3] if len(msa) > 3 else b"", *(_err_text(f, header.field) for s, f in segments if s == b"ERR"))
        if part
    )[:_ANSWER_CHARS]
    if code in ("AA", "CA"):
        return Attempt(Verdict.DELIVERED, code)
    if code in ("AR", "CR"):
        return Attempt(Verdict.REFUSED, code, text)
    return Attempt(Verdict.RETRY, code or "unreadable", text, maybe_received=code not in ("AE", "CE"))


def _err_text(fields: list[bytes], separator: bytes) -> bytes:
    """An ERR segment's fields as one line again (its text is what an operator reads)."""
    return separator.join(fields[1:])
