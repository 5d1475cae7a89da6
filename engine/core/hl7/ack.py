"""HL7 v2 acknowledgements: original mode (AA/AE/AR) and enhanced mode (CA/CE/CR).

The mode follows the message: MSH-15 or MSH-16 valued means enhanced mode,
and MSH-15 then says whether an accept ACK is wanted at all (AL, NE, ER, SU).
The ACK echoes MSH-10 in MSA-2, swaps sender and receiver, and keeps the
message's own delimiters. A refusal carries an ERR segment naming segment,
field and reason: ERR-2..ERR-8 (v2.5+) and the older ERR-1 (before v2.5).

An ACK can be built even for a message that failed to parse, from whatever of
its header can be read (`AckContext.from_raw`); with no MSH at all, the ACK
has an empty MSA-2, which is all HL7 allows.

Pure: the caller passes the ACK's own control id and timestamp.
"""

from __future__ import annotations

from typing import final

import msgspec

from engine.core.errors import HeaderError, InputError, MessageError
from engine.core.hl7.encoding import DEFAULT_DELIMITERS, Delimiters, escape
from engine.core.hl7.message import Message
from engine.core.hl7.scan import read_header
from engine.core.outcome import Outcome

__all__ = ["AckContext", "Outcome", "build_ack"]


_CODES = {
    (Outcome.ACCEPTED, False): "AA",
    (Outcome.RETRY, False): "AE",
    (Outcome.REJECTED, False): "AR",
    (Outcome.ACCEPTED, True): "CA",
    (Outcome.RETRY, True): "CE",
    (Outcome.REJECTED, True): "CR",
}


@final
class AckContext(msgspec.Struct, frozen=True):
    """The parts of the original header an ACK needs, fields as written (escaped)."""

    delimiters: Delimiters = DEFAULT_DELIMITERS
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    control_id: str = ""
    trigger_event: str = ""
    processing_id: str = "P"
    version: str = "2.5.1"
    accept_ack_type: str = ""
    application_ack_type: str = ""

    @classmethod
    def from_message(cls, msg: Message) -> AckContext:
        msh = msg.segments[0]
        return cls(
            msg.delimiters,
            msh.field(3) or "",
            msh.field(4) or "",
            msh.field(5) or "",
            msh.field(6) or "",
            msh.field(10) or "",
            msh.value(9, 1, 2) or "",
            msh.field(11) or "P",
            msh.field(12) or "2.5.1",
            msh.value(15) or "",
            msh.value(16) or "",
        )

    @classmethod
    def from_raw(cls, raw: bytes) -> AckContext:
        """Read what can be read of a header that did not parse."""
        try:
            h = read_header(raw)
        except HeaderError:
            return cls()
        try:
            d = Delimiters.from_header(h.field.decode("latin-1"), h.get(2).decode("latin-1"))
        except InputError:
            d = DEFAULT_DELIMITERS
        fields = [f.decode("latin-1") for f in h.fields]
        fields += [""] * (13 - len(fields))
        return cls(
            d,
            fields[3],
            fields[4],
            fields[5],
            fields[6],
            fields[10],
            h.get(9, 2).decode("latin-1"),
            fields[11] or "P",
            fields[12] or "2.5.1",
            h.get(15).decode("latin-1"),
            h.get(16).decode("latin-1"),
        )

    @property
    def enhanced(self) -> bool:
        """Enhanced acknowledgement mode (MSH-15 or MSH-16 valued)."""
        return bool(self.accept_ack_type or self.application_ack_type)

    def wants_ack(self, outcome: Outcome) -> bool:
        """Whether the sender asked for an accept ACK for this outcome (MSH-15)."""
        if not self.enhanced:
            return True
        mode = self.accept_ack_type or "AL"
        if mode == "NE":
            return False
        if mode == "ER":
            return outcome is not Outcome.ACCEPTED
        if mode == "SU":
            return outcome is Outcome.ACCEPTED
        return True


def _version_at_least_25(version: str) -> bool:
    parts = version.split(".")
    try:
        major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return True
    return (major, minor) >= (2, 5)


def build_ack(
    ctx: AckContext,
    outcome: Outcome,
    *,
    control_id: str,
    timestamp: str,
    error: MessageError | None = None,
    text: str = "",
) -> Message:
    """Build the ACK for a message.

    Args:
        ctx: the original header (`AckContext.from_message` / `from_raw`).
        outcome: accepted, retry (temporary failure) or rejected.
        control_id: the ACK's own MSH-10.
        timestamp: the ACK's MSH-7 (HL7 DTM, from the node's clock).
        error: for a refusal, the error to report in ERR.
        text: MSA-3 text (defaults to the error's reason).
    """
    d = ctx.delimiters
    f = d.field
    code = _CODES[(outcome, ctx.enhanced)]
    event = escape(ctx.trigger_event, d)
    msh = f.join(
        [
            "MSH",
            d.encoding_characters,
            ctx.receiving_application,
            ctx.receiving_facility,
            ctx.sending_application,
            ctx.sending_facility,
            escape(timestamp, d),
            "",
            f"ACK{d.component}{event}{d.component}ACK" if event else "ACK",
            escape(control_id, d),
            ctx.processing_id,
            ctx.version,
        ]
    )
    reason = text or (error.reason if error is not None else "")
    # MSA-2 is required even when empty (no control id could be read).
    msa = f.join(["MSA", code, ctx.control_id] + ([escape(reason, d)] if reason else []))
    lines = [msh, msa]
    accepted = outcome is Outcome.ACCEPTED
    # On an accepted message the error is a warning (ERR-4 = W, v2.5 on); before v2.5 an ERR has no
    # severity and would read as a refusal, so MSA-3's text says it alone.
    if error is not None and not (accepted and not _version_at_least_25(ctx.version)):
        lines.append(_err_segment(ctx, error, "W" if accepted else "E"))
    return Message(lines, d, "utf-8", "\r")


def _err_segment(ctx: AckContext, error: MessageError, severity: str) -> str:
    d = ctx.delimiters
    c, s = d.component, d.subcomponent
    loc = error.location
    seg = loc.segment or ""
    seq = str(loc.sequence or 1) if seg else ""
    field = str(loc.field) if loc.field is not None else ""
    code = str(error.hl7_code)
    reason = escape(error.reason, d)
    if _version_at_least_25(ctx.version):
        location = c.join([seg, seq, field]).rstrip(c)
        fields = ["ERR", "", location, c.join([code, reason, "HL70357"]), severity, "", "", "", reason]
    else:
        eld = c.join([seg, seq, field, s.join([code, reason, "HL70357"])])
        fields = ["ERR", eld]
    return d.field.join(fields)
