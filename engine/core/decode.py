"""From raw bytes to envelopes: classify, parse, map.

This is the whole pure pipeline in one place: `Decoder.hl7` and
`Decoder.fhir` turn one message into envelopes (or raise a typed
`InputError`), and `decode_input` runs a whole input through `split_input`
so every message comes back either as an envelope or as its error, in order.

The caller supplies the receive time and the source: the pure floor reads no
clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import final

import msgspec

from engine.core.errors import InputError
from engine.core.fhir import (
    BundleEntry,
    DecodedBundle,
    MessageHeader,
    Meta,
    Patient,
    Resource,
    decode_document,
    map_resource,
    patient_key,
    resource_type,
)
from engine.core.hl7 import CharsetDefaults, map_message, parse
from engine.core.identity import fhir_digest, hl7_digest
from engine.core.model import Envelope, Event, Kind
from engine.core.split import split_input
from lanes import Classification, Classifier

__all__ = ["Decoded", "Decoder", "decode_input"]


@final
class Decoded(msgspec.Struct, frozen=True):
    """One message of an input: its envelope, or the error that refused it."""

    index: int
    offset: int
    kind: Kind
    envelope: Envelope | None = None
    error: InputError | None = None


def _canonical_hash(raw: bytes) -> str:
    """sha256 of the JSON re-encoded with sorted keys: same content, same id."""
    try:
        canonical = msgspec.json.encode(msgspec.json.decode(raw), order="sorted")
    except (msgspec.DecodeError, UnicodeDecodeError):
        # Parts the resource decoders skip (an unknown element) can still defeat
        # a generic decode; the exact bytes are then the identity.
        canonical = raw
    return "fhir:sha256:" + hashlib.sha256(canonical).hexdigest()


@final
class Decoder:
    """Classifies, parses and maps messages; build once, reuse for every message."""

    def __init__(self, classifier: Classifier | None = None, charsets: CharsetDefaults | None = None) -> None:
        self.classifier = classifier if classifier is not None else Classifier()
        self.charsets = charsets if charsets is not None else CharsetDefaults()

    def hl7(
        self,
        raw: bytes,
        *,
        received_at: str,
        source: str,
        in_batch: bool = False,
        classified: Classification | None = None,
    ) -> Envelope:
        """One HL7 v2 message to its envelope; `classified`: the lane already decided for these bytes.

        Raises:
            InputError: the message is malformed or lacks a required patient.
        """
        lane = classified if classified is not None else self.classifier.classify_hl7(raw, in_batch=in_batch)
        msg = parse(raw, self.charsets)
        mapped = map_message(msg)
        return Envelope(
            message_id=mapped.message_id,
            kind=Kind.HL7V2,
            message_type=mapped.message_type,
            patient=mapped.patient,
            lane=lane.lane,
            lane_reason=lane.reason,
            received_at=received_at,
            source=source,
            raw=raw,
            events=mapped.events,
            other_patients=mapped.other_patients,
            non_production=lane.non_production,
            digest=hl7_digest(raw),
            invalid_text=msg.invalid_text,
        )

    def fhir(self, raw: bytes, *, received_at: str, source: str) -> list[Envelope]:
        """One FHIR JSON document to its envelopes.

        A Bundle of type `batch` gives one envelope per entry (each entry is
        classified on its own, DESIGN.md); any other Bundle is one message.

        Raises:
            InputError: invalid JSON, an unknown shape, or no patient.
        """
        doc = decode_document(raw)
        if not isinstance(doc, DecodedBundle):
            return [
                self._fhir_envelope(
                    [(doc, "$")],
                    raw=raw,
                    message_id=_canonical_hash(raw),
                    digest=fhir_digest(raw),
                    message_type=resource_type(doc),
                    received_at=received_at,
                    source=source,
                )
            ]
        patients = _bundle_patients(doc.entries)
        metas = (doc.bundle.meta,)
        if doc.type == "batch":
            return [
                self._fhir_envelope(
                    [(e.resource, f"$.entry[{e.index}].resource")],
                    metas=metas,
                    raw=e.json,
                    message_id=f"fhir:Bundle/{doc.id}#{e.index}" if doc.id else _canonical_hash(e.json),
                    digest=fhir_digest(e.json),
                    message_type=resource_type(e.resource),
                    patients=patients,
                    received_at=received_at,
                    source=source,
                )
                for e in doc.entries
            ]
        return [
            self._fhir_envelope(
                [(e.resource, f"$.entry[{e.index}].resource") for e in doc.entries],
                metas=metas,
                raw=raw,
                message_id=_bundle_id(doc, raw),
                digest=fhir_digest(raw),
                message_type=_bundle_type(doc),
                patients=patients,
                received_at=received_at,
                source=source,
            )
        ]

    def _fhir_envelope(
        self,
        resources: Sequence[tuple[Resource, str]],
        *,
        raw: bytes,
        message_id: str,
        digest: int,
        message_type: str,
        received_at: str,
        source: str,
        metas: Sequence[Meta | None] = (),
        patients: dict[str, str] | None = None,
    ) -> Envelope:
        lane = self.classifier.classify_fhir((r for r, _ in resources), metas)
        keys: list[str] = []
        events: list[Event] = []
        for resource, path in resources:
            key, found = map_resource(resource, patients or {}, path)
            if key is not None and key not in keys:
                keys.append(key)
            events.extend(found)
        return Envelope(
            message_id=message_id,
            kind=Kind.FHIR,
            message_type=message_type,
            patient=keys[0] if keys else None,
            lane=lane.lane,
            lane_reason=lane.reason,
            received_at=received_at,
            source=source,
            raw=raw,
            events=tuple(events),
            other_patients=tuple(keys[1:]),
            non_production=lane.non_production,
            digest=digest,
        )


def _bundle_patients(entries: Sequence[BundleEntry]) -> dict[str, str]:
    """Reference strings (fullUrl, Patient/id) to the patient keys of a Bundle's Patients."""
    out: dict[str, str] = {}
    for e in entries:
        if isinstance(e.resource, Patient):
            key = patient_key(e.resource)
            if e.full_url:
                out[e.full_url] = key
            if e.resource.id:
                out[f"Patient/{e.resource.id}"] = key
    return out


def _bundle_id(doc: DecodedBundle, raw: bytes) -> str:
    if doc.type == "message" and doc.entries and isinstance(doc.entries[0].resource, MessageHeader):
        header = doc.entries[0].resource
        if header.id:
            return f"fhir:MessageHeader/{header.id}"
    if doc.id:
        return f"fhir:Bundle/{doc.id}"
    return _canonical_hash(raw)


def _bundle_type(doc: DecodedBundle) -> str:
    if doc.entries and isinstance(doc.entries[0].resource, MessageHeader):
        event = doc.entries[0].resource.event_coding
        if event is not None and event.code:
            return f"Bundle:{doc.type}:{event.code}"
    return f"Bundle:{doc.type}"


def decode_input(
    raw: bytes, decoder: Decoder, *, received_at: str, source: str, max_message_bytes: int = 16 * 1024 * 1024
) -> list[Decoded]:
    """Every message of one input, in order, each decoded or refused with its location."""
    out: list[Decoded] = []
    for piece in split_input(raw, max_message_bytes):
        if piece.error is not None:
            out.append(Decoded(len(out), piece.offset, piece.kind, error=piece.error.located(message_index=len(out))))
            continue
        try:
            if piece.kind is Kind.HL7V2:
                envelopes = [decoder.hl7(piece.data, received_at=received_at, source=source, in_batch=piece.in_batch)]
            else:
                envelopes = decoder.fhir(piece.data, received_at=received_at, source=source)
        except InputError as exc:
            err = exc.located(message_index=len(out), byte_offset=piece.offset)
            out.append(Decoded(len(out), piece.offset, piece.kind, error=err))
            continue
        for env in envelopes:
            out.append(Decoded(len(out), piece.offset, piece.kind, envelope=env))
    return out
