"""What message search knows of a message: who sent it, what kind, when, where it went. Pure; no PHI.

A row holds the sender (MSH-3/MSH-4), the type (MSH-9), the control id
(MSH-10), the lane and the outcome: who sent what, never whom it is about.
Rows are made from a log record's body (decoded for its metadata only: the
original bytes and the events are skipped) or from a quarantined input's
header. `SearchQuery.matches` is the search's meaning; the index's SQL
(`engine.search.index`) must agree with it, and a test holds them together.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Final, final

import msgspec

from engine.core.errors import HeaderError
from engine.core.hl7 import read_header
from engine.core.model import Kind, Lane

__all__ = [
    "MessageRow",
    "MetadataRecord",
    "Outcome",
    "SearchQuery",
    "control_id_of",
    "decode_row",
    "header_metadata",
    "micros",
    "row_of",
    "sender_of",
]


class Outcome(enum.Enum):
    """What became of a message that arrived."""

    ACCEPTED = "accepted"  # in the log
    REUSED = "reused"  # in the log, under a control id an earlier, different message had (counted)
    REJECTED = "rejected"  # refused (AR/AE for good): in quarantine, not in the log


@final
class MessageRow(msgspec.Struct, frozen=True, gc=False):
    """One message as search shows it.

    `lsn` is the log position (0 for a rejected message, which has `qid`, its
    quarantine id, instead); `at` when the log recorded it (or quarantine kept it).
    """

    lsn: int
    at: str
    lane: str
    kind: str
    message_type: str
    sender: str
    control_id: str
    source: str
    reason: str
    outcome: Outcome
    message_id: str = ""
    qid: int = 0


def sender_of(message_id: str) -> str:
    """`MSH-3^MSH-4` of an HL7 v2 message's id (`hl7:APP|FAC|CTRL`); "" for others. Not PHI."""
    if not message_id.startswith("hl7:"):
        return ""
    app, _, rest = message_id[4:].partition("|")
    # Each an HD: its namespace id is what people call the system (the universal id follows it).
    return f"{app.split('^')[0]}^{rest.partition('|')[0].split('^')[0]}"


def control_id_of(message_id: str) -> str:
    """MSH-10 of an HL7 v2 message's id; a FHIR message's id after its scheme. Not PHI."""
    if message_id.startswith("hl7:"):
        return message_id[4:].split("|", 2)[-1]
    return message_id.partition(":")[2]


def header_metadata(raw: bytes) -> tuple[str, str, str]:
    """Sender (MSH-3^MSH-4), type (MSH-9) and control id (MSH-10) of input that may not be HL7 at all ("" then).

    Who sent it and what kind it is, not whom it is about: shown without quarantine.content.
    """
    try:
        header = read_header(raw)
    except HeaderError:
        return "", "", ""

    def text(n: int, comp: int = 1) -> str:
        return header.get(n, comp).decode("utf-8", errors="replace")

    event = text(9, 2)
    return f"{text(3)}^{text(4)}", f"{text(9)}^{event}" if event else text(9), text(10)


class _EnvelopeMetadata(msgspec.Struct, frozen=True, gc=False):
    """Of an envelope, what search keeps: decoding skips the original bytes and the events."""

    message_id: str
    kind: Kind
    message_type: str
    lane: Lane
    lane_reason: str
    source: str


@final
class MetadataRecord(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A log record's body decoded for search (the layout of `engine.wal.LogRecord`)."""

    lsn: int
    recorded_at: str
    partition: int
    epoch: int
    message_id: str
    patients: msgspec.Raw
    prev_hash: msgspec.Raw
    envelope: _EnvelopeMetadata
    digest: int = 0


decode_row = msgspec.msgpack.Decoder(MetadataRecord).decode
"""Decode a record's body for search (raises msgspec errors on a malformed body)."""


def row_of(record: MetadataRecord) -> MessageRow:
    """The search row of a log record (accepted: the index tells a reused control id, `engine.search.index`)."""
    env = record.envelope
    return MessageRow(
        record.lsn,
        record.recorded_at,
        env.lane.value,
        env.kind.value,
        env.message_type,
        sender_of(env.message_id),
        control_id_of(env.message_id),
        env.source,
        env.lane_reason,
        Outcome.ACCEPTED,
        env.message_id,
    )


def micros(iso: str) -> int:
    """An ISO 8601 time as microseconds since the epoch (UTC when it has no offset): times compare as numbers."""
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


_ANY: Final = "*"


@final
class SearchQuery(msgspec.Struct, frozen=True):
    """A search: every given criterion must hold.

    `sender` is `APP^FAC`, or `APP` for any facility of it; `message_type` is exact
    (`ORU^R01`) or a trigger wildcard (`ADT^*`); `since`/`until` are ISO 8601
    times (inclusive, exclusive); `outcomes` empty means any.
    """

    control_id: str | None = None
    sender: str | None = None
    message_type: str | None = None
    since: str | None = None
    until: str | None = None
    lane: str | None = None
    outcomes: frozenset[Outcome] = frozenset()
    from_lsn: int = 1

    def matches(self, row: MessageRow) -> bool:
        """Whether a row is one this search finds."""
        return (
            (self.control_id is None or row.control_id == self.control_id)
            and (self.sender is None or _sender_matches(self.sender, row.sender))
            and (self.message_type is None or _type_matches(self.message_type, row.message_type))
            and (self.since is None or micros(row.at) >= micros(self.since))
            and (self.until is None or micros(row.at) < micros(self.until))
            and (self.lane is None or row.lane == self.lane)
            and (not self.outcomes or row.outcome in self.outcomes)
            and (row.outcome is Outcome.REJECTED or row.lsn >= self.from_lsn)
        )


def _sender_matches(wanted: str, sender: str) -> bool:
    if "^" in wanted:
        return sender == wanted
    return sender.startswith(f"{wanted}^")


def _type_matches(wanted: str, mtype: str) -> bool:
    if wanted.endswith(f"^{_ANY}"):
        return mtype.startswith(wanted[:-1])
    return mtype == wanted
