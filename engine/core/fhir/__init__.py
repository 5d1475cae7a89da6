"""FHIR R4: decoding JSON, Bundles and NDJSON, and mapping to the model (pure)."""

from engine.core.fhir.codec import BundleEntry, DecodedBundle, decode_document, decode_resource, split_ndjson
from engine.core.fhir.mapping import map_resource, patient_key, resolve_patient, resource_type
from engine.core.fhir.resources import (
    RESOURCE_TYPES,
    DiagnosticReport,
    Encounter,
    MedicationRequest,
    MessageHeader,
    Meta,
    Observation,
    Patient,
    RawResource,
    Resource,
    ServiceRequest,
)

__all__ = [
    "RESOURCE_TYPES",
    "BundleEntry",
    "DecodedBundle",
    "DiagnosticReport",
    "Encounter",
    "MedicationRequest",
    "MessageHeader",
    "Meta",
    "Observation",
    "Patient",
    "RawResource",
    "Resource",
    "ServiceRequest",
    "decode_document",
    "decode_resource",
    "map_resource",
    "patient_key",
    "resolve_patient",
    "resource_type",
    "split_ndjson",
]
