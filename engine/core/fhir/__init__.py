"""FHIR R4: decoding JSON, Bundles and NDJSON, mapping to the model, and HL7 v2 as FHIR (pure)."""

from engine.core.fhir.codec import BundleEntry, DecodedBundle, decode_document, decode_resource, split_ndjson
from engine.core.fhir.from_hl7v2 import bundle_from_hl7v2, resource_id
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
from engine.core.fhir.v2_datatypes import Json, fhir_string, pruned
from engine.core.fhir.v2_vocabulary import (
    ENCOUNTER_CLASS,
    GENDER,
    INTERPRETATION_SYSTEM,
    OBSERVATION_STATUS,
    code_system,
)

__all__ = [
    "ENCOUNTER_CLASS",
    "GENDER",
    "INTERPRETATION_SYSTEM",
    "OBSERVATION_STATUS",
    "RESOURCE_TYPES",
    "BundleEntry",
    "DecodedBundle",
    "DiagnosticReport",
    "Encounter",
    "Json",
    "MedicationRequest",
    "MessageHeader",
    "Meta",
    "Observation",
    "Patient",
    "RawResource",
    "Resource",
    "ServiceRequest",
    "bundle_from_hl7v2",
    "code_system",
    "decode_document",
    "decode_resource",
    "fhir_string",
    "map_resource",
    "patient_key",
    "pruned",
    "resolve_patient",
    "resource_id",
    "resource_type",
    "split_ndjson",
]
