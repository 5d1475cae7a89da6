"""What a route sends for one record: the message as logged (MSH-5/6 rewritten if asked), or as FHIR R4.

`transform = "fhir"` turns an HL7 v2 message into a transaction Bundle
(`engine.core.fhir.from_hl7v2`); a FHIR message goes as it came. A message
the transform makes nothing of (no patient, nothing clinical) has nothing
to send: the route settles it and counts it.
"""

from __future__ import annotations

import zoneinfo
from typing import final

import msgspec

from engine.core.fhir import bundle_from_hl7v2
from engine.core.hl7 import CharsetDefaults, parse
from engine.core.model import Kind
from engine.infra.route_config import RouteConfig
from engine.routes.selection import Candidate, rewrite_receiver

__all__ = ["Payload", "PayloadMaker"]


@final
class Payload(msgspec.Struct, frozen=True, gc=False):
    """The bytes to deliver, and whether they are FHIR JSON (else HL7 v2)."""

    body: bytes
    fhir: bool


@final
class PayloadMaker:
    """A route's transform, made once from its settings."""

    def __init__(self, config: RouteConfig, charsets: CharsetDefaults) -> None:
        self._charsets = charsets  # the node's: the transform reads a message as intake did
        self._fhir = config.transform == "fhir"
        self._application = config.receiving_application
        self._facility = config.receiving_facility
        self._zone = zoneinfo.ZoneInfo(config.timezone)

    def make(self, candidate: Candidate) -> Payload | None:
        """The payload, or None when the transform has nothing to send for this message.

        Raises:
            HL7Error: the message cannot be read for the transform (a field's
                escape, say): the route refuses it, with this error as the answer.
        """
        if candidate.kind is Kind.FHIR:
            return Payload(candidate.raw, fhir=True)
        raw = rewrite_receiver(candidate.raw, self._application, self._facility)
        if not self._fhir:
            return Payload(raw, fhir=False)
        bundle = bundle_from_hl7v2(parse(raw, self._charsets), candidate.message_id, self._zone)
        return None if bundle is None else Payload(bundle, fhir=True)
