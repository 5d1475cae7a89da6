"""Which log records a route delivers (its filter), and the copy it sends (MSH-5/6 rewritten if asked)."""

from __future__ import annotations

from typing import final

import msgspec

from engine.core.errors import HeaderError
from engine.core.hl7 import read_header
from engine.core.model import Kind, Lane
from engine.infra.route_config import RouteConfig

__all__ = ["Candidate", "RouteFilter", "rewrite_receiver"]


@final
class Candidate(msgspec.Struct, frozen=True, gc=False):
    """What a route knows of one log record: enough to choose, order and send it."""

    lsn: int
    patient: str  # "" for a message about no patient (master files): those keep log order among themselves
    lane: Lane
    kind: Kind
    message_type: str
    message_id: str
    raw: bytes
    recorded_at: str = ""  # when the log recorded it (ISO 8601, UTC): a replay from a time compares it
    event_kinds: frozenset[str] = frozenset()  # the kinds of its clinical events (`result`, `admitted`)
    trace_parent: str = ""  # the span that received it (W3C traceparent), when tracing was on


def _matcher(patterns: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Exact values, and prefixes of the patterns that end in `*`."""
    exact = frozenset(p for p in patterns if not p.endswith("*"))
    prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))
    return exact, prefixes


@final
class RouteFilter:
    """A route's filter: lanes, message types, senders and event kinds (each empty: all)."""

    def __init__(self, config: RouteConfig) -> None:
        self._lanes = frozenset(config.lanes)
        self._types = _matcher(config.message_types) if config.message_types else None
        self._senders = _matcher(config.senders) if config.senders else None
        self._events = frozenset(config.event_kinds)

    def matches(self, candidate: Candidate) -> bool:
        """Whether the route delivers this record (commands the node recorded itself never).

        Event kinds match when the message carries any of them.
        """
        if candidate.kind is Kind.COMMAND:
            return False
        if self._lanes and candidate.lane not in self._lanes:
            return False
        if self._types is not None and not _any(self._types, candidate.message_type):
            return False
        if self._events and not self._events & candidate.event_kinds:
            return False
        return self._senders is None or _any(self._senders, _sender(candidate))


def _any(matcher: tuple[frozenset[str], tuple[str, ...]], value: str) -> bool:
    exact, prefixes = matcher
    return value in exact or any(value.startswith(p) for p in prefixes)


def _sender(candidate: Candidate) -> str:
    """`MSH-3^MSH-4` of an HL7 v2 message; "" for FHIR (which has no such header)."""
    if candidate.kind is not Kind.HL7V2:
        return ""
    try:
        header = read_header(candidate.raw)
    except HeaderError:
        return ""
    return f"{header.get(3).decode('latin-1')}^{header.get(4).decode('latin-1')}"


def rewrite_receiver(raw: bytes, application: str, facility: str) -> bytes:
    """The message with MSH-5 (and MSH-6, when given) set; the rest byte for byte as logged.

    The values come from the configuration, never from a message; a message
    whose header cannot be read goes as it is (it was accepted, so this is rare).
    """
    if not application:
        return raw
    try:
        header = read_header(raw)
    except HeaderError:
        return raw
    start = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    line = raw[start:].split(b"\r", 1)[0].split(b"\n", 1)[0]
    fields = list(header.fields)
    while len(fields) < 7:
        fields.append(b"")
    fields[5] = application.encode()
    if facility:
        fields[6] = facility.encode()
    new_line = header.field.join([fields[0], *fields[2:]])
    return raw[:start] + new_line + raw[start + len(line) :]
