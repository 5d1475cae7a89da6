"""Vigil's exceptions: the root of the tree, and every way input can be refused.

Every error Vigil raises on purpose is a `VigilError`, so the CLI turns any of
them into one line and an exit code, never a traceback. Every codec, the
classifier and the mappers raise only `InputError`s; a property test feeds
them arbitrary bytes to prove it. Each `MessageError` knows where it happened
as precisely as the codec could tell, so an operator (or an HL7 ERR segment)
can point at the exact segment and field. The whole tree (each module lists
its own part):

    VigilError
     ├── ConfigError                 a configuration value is not allowed
     ├── MessageError                what an answer to one message can report (ERR)
     │    ├── InputError             the message's fault: it cannot be accepted as sent (AR)
     │    │    ├── FramingError      MLLP framing broken, frame too large
     │    │    ├── FormatError       the bytes are not any format Vigil reads
     │    │    ├── HL7Error          HL7 v2 structure or content
     │    │    │    ├── HeaderError       no MSH, wrong encoding characters, truncated
     │    │    │    ├── EscapeError       a malformed escape sequence
     │    │    │    ├── CharsetError      MSH-18 unknown, or bytes not in that charset
     │    │    │    └── MissingFieldError a field the message type needs is absent
     │    │    └── FHIRError         FHIR R4 JSON
     │    │         ├── JSONError    not JSON at all
     │    │         └── ShapeError   JSON, but not a resource shape Vigil knows
     │    └── TemporaryError         not the message's fault: the node cannot take it now (AE)
     ├── WALError                    the log (engine.wal.errors: corrupt, failed, disk full, locked)
     ├── DamagedFileError            a small state file failed its checksum (engine.wal.small_file)
     ├── AdminError                  an operator request refused (engine.infra.admin_socket)
     │    └── NodeNotRunningError    no node answers on the admin socket
     ├── AccessRefusedError          no session, or not allowed (engine.auth.service)
     ├── FencedError                 a partition's epoch moved on (engine.cluster.replication)
     ├── PositionMovedError          a projection's position changed under it (engine.projections.writer)
     ├── SupervisorGaveUp            restarts past their intensity (actors.supervisor)
     ├── MailboxFull, ActorClosed    an actor cannot take a message (actors.actor)
     └── LaneFull                    a lane is at its capacity (lanes.scheduler)

Each `MessageError` also carries the HL7 error code (table 0357) that an ACK
should report, so the ACK builder never has to guess.
"""

from __future__ import annotations

import copy
import traceback
from typing import Any, Self, final

import msgspec

from engine.core.inert import inert

__all__ = [
    "CharsetError",
    "ConfigError",
    "ErrorLocation",
    "EscapeError",
    "FHIRError",
    "FormatError",
    "FramingError",
    "HL7Error",
    "HeaderError",
    "InputError",
    "JSONError",
    "MessageError",
    "MissingFieldError",
    "ShapeError",
    "TemporaryError",
    "VigilError",
    "error_summary",
    "first_leaf",
]

# HL7 table 0357 (message error condition codes) that Vigil reports.
SEGMENT_SEQUENCE_ERROR = 100
REQUIRED_FIELD_MISSING = 101
DATA_TYPE_ERROR = 102
UNSUPPORTED_MESSAGE_TYPE = 200
APPLICATION_INTERNAL_ERROR = 207


@final
class ErrorLocation(msgspec.Struct, frozen=True, omit_defaults=True):
    """Where an input error was found; every part is optional.

    `message_index` counts messages in one input (file, stream) from 0;
    `byte_offset` counts bytes from the start of that input. `segment` and
    `field` follow HL7 numbering (`PID`, 3); `sequence` is the segment's
    occurrence (1 = first); for FHIR, `path` is a JSON path such as `$.status`.
    """

    message_index: int | None = None
    byte_offset: int | None = None
    segment: str | None = None
    sequence: int | None = None
    field: int | None = None
    path: str | None = None


class VigilError(Exception):
    """The root of every error Vigil raises on purpose."""


class ConfigError(VigilError):
    """A configuration value is not allowed; the message names key and choices."""


class MessageError(VigilError):
    """What an answer to one message reports: a refusal, a temporary failure, or a warning.

    Attributes:
        reason: one line for a person, naming what is wrong.
        location: where it was found.
        hl7_code: the HL7 table 0357 code an ACK's ERR segment should carry.
    """

    hl7_code: int = DATA_TYPE_ERROR

    def __init__(self, reason: str, location: ErrorLocation | None = None) -> None:
        reason = inert(reason)  # it may quote the message: shown in ACKs, logs, quarantine, terminals
        super().__init__(reason)
        self.reason = reason
        self.location = location if location is not None else ErrorLocation()

    def __str__(self) -> str:
        where = self.where()
        return f"{self.reason} ({where})" if where else self.reason

    def where(self) -> str:
        """The location as a short phrase: `message 2, byte 180, PID-3`."""
        loc = self.location
        parts: list[str] = []
        if loc.message_index is not None:
            parts.append(f"message {loc.message_index}")
        if loc.byte_offset is not None:
            parts.append(f"byte {loc.byte_offset}")
        if loc.segment is not None:
            seg = loc.segment if loc.sequence in (None, 1) else f"{loc.segment}[{loc.sequence}]"
            parts.append(f"{seg}-{loc.field}" if loc.field is not None else seg)
        if loc.path is not None:
            parts.append(loc.path)
        return ", ".join(parts)

    def located(self, **changes: Any) -> Self:
        """Return this error with more location filled in (e.g. the message index).

        An offset given here is added to the one already known, so a codec can
        report offsets within a message and the splitter shift them to the input.
        """
        loc = self.location
        if "byte_offset" in changes and loc.byte_offset is not None:
            changes["byte_offset"] += loc.byte_offset
        known = {k: v for k, v in changes.items() if getattr(loc, k) is None or k == "byte_offset"}
        clone = copy.copy(self)
        clone.location = msgspec.structs.replace(loc, **known)
        return clone

    def to_dict(self) -> dict[str, Any]:
        """The error as plain data, for `--json` output and quarantine records."""
        out: dict[str, Any] = {"type": type(self).__name__, "reason": self.reason}
        out.update(msgspec.to_builtins(self.location))
        out["hl7_code"] = self.hl7_code
        return out


class InputError(MessageError):
    """A message that cannot be accepted as it was sent: the sender must change it (AR/CR)."""


class TemporaryError(MessageError):
    """Not the message's fault: the node cannot take it now (disk full, log stopped, timeout); retry (AE/CE)."""

    hl7_code = APPLICATION_INTERNAL_ERROR


class FramingError(InputError):
    """A message cannot be cut from its input: MLLP framing is broken (bytes outside any frame, a frame
    cut short), or it is larger than `ingest.message_bytes_max`.

    `head` holds the first bytes of a refused frame when they were seen (an
    oversized one): enough to echo its MSH-10 in the refusal.
    """

    def __init__(self, reason: str, location: ErrorLocation | None = None, *, head: bytes = b"") -> None:
        super().__init__(reason, location)
        self.head = head


class FormatError(InputError):
    """The bytes are not HL7 v2, MLLP-framed HL7 v2, FHIR JSON or NDJSON."""

    hl7_code = UNSUPPORTED_MESSAGE_TYPE


class HL7Error(InputError):
    """An HL7 v2 message is malformed."""


class HeaderError(HL7Error):
    """No MSH segment, wrong encoding characters, or an MSH cut short."""

    hl7_code = SEGMENT_SEQUENCE_ERROR


class EscapeError(HL7Error):
    """An escape sequence is unterminated or unknown."""


class CharsetError(HL7Error):
    """MSH-18 names a character set Vigil cannot read, or the bytes are not in it."""


class MissingFieldError(HL7Error):
    """A field the message type requires is absent (for example PID-3)."""

    hl7_code = REQUIRED_FIELD_MISSING


class FHIRError(InputError):
    """A FHIR R4 document is malformed."""


class JSONError(FHIRError):
    """The bytes are not valid JSON."""


class ShapeError(FHIRError):
    """Valid JSON, but not the shape of a resource Vigil understands."""


def error_summary(error: BaseException) -> str:
    """An error for a status line: its type and the innermost frame of ours it came from, never its text.

    The text of an exception may quote a message (a patient key in a KeyError);
    the type and the place are what an operator needs to file it.
    """
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "/site-packages/" not in f.filename and "/lib/python" not in f.filename]
    where = ours[-1] if ours else (frames[-1] if frames else None)
    if where is None:
        return type(error).__name__
    return f"{type(error).__name__} at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}"


def first_leaf(error: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups: the one to name; itself when not a group."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
