"""FHIR R4 resources the engine understands, as frozen msgspec Structs.

Only the elements Vigil reads are declared; everything else in a resource is
skipped by the decoder (and kept, with the rest of the original bytes, in the
envelope). Quantities decode to `Decimal` so `6.90` stays `6.90`. Resources
Vigil does not know are kept as `RawResource` with their JSON untouched.
"""

from __future__ import annotations

from decimal import Decimal
from typing import final

import msgspec

__all__ = [
    "RESOURCE_TYPES",
    "Account",
    "AllergyIntolerance",
    "Bundle",
    "BundleEntry",
    "ChargeItem",
    "Claim",
    "CodeableConcept",
    "Coding",
    "DiagnosticReport",
    "Encounter",
    "Identifier",
    "Invoice",
    "MedicationAdministration",
    "MedicationRequest",
    "MessageHeader",
    "Observation",
    "Patient",
    "RawResource",
    "Reference",
    "Resource",
    "ServiceRequest",
]


class _Element(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """Base of every FHIR element: camelCase on the wire, unknown elements skipped."""


@final
class Coding(_Element, frozen=True):
    system: str | None = None
    code: str | None = None
    display: str | None = None


@final
class CodeableConcept(_Element, frozen=True):
    coding: tuple[Coding, ...] = ()
    text: str | None = None

    def first_code(self) -> str:
        """The first coding's code, or ''."""
        for c in self.coding:
            if c.code:
                return c.code
        return ""


@final
class Identifier(_Element, frozen=True):
    system: str | None = None
    value: str | None = None
    type: CodeableConcept | None = None
    use: str | None = None


@final
class Reference(_Element, frozen=True):
    reference: str | None = None
    identifier: Identifier | None = None
    display: str | None = None


@final
class Quantity(_Element, frozen=True):
    value: Decimal | None = None
    comparator: str | None = None
    unit: str | None = None
    system: str | None = None
    code: str | None = None


@final
class Ratio(_Element, frozen=True):
    numerator: Quantity | None = None
    denominator: Quantity | None = None


@final
class Range(_Element, frozen=True):
    low: Quantity | None = None
    high: Quantity | None = None


@final
class Money(_Element, frozen=True):
    value: Decimal | None = None
    currency: str | None = None


@final
class Period(_Element, frozen=True):
    start: str | None = None
    end: str | None = None


@final
class HumanName(_Element, frozen=True):
    use: str | None = None
    family: str | None = None
    given: tuple[str, ...] = ()
    text: str | None = None


@final
class Address(_Element, frozen=True):
    line: tuple[str, ...] = ()
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None
    text: str | None = None


@final
class Meta(_Element, frozen=True):
    tag: tuple[Coding, ...] = ()
    security: tuple[Coding, ...] = ()


@final
class ReferenceRange(_Element, frozen=True):
    low: Quantity | None = None
    high: Quantity | None = None
    text: str | None = None


class _Resource(_Element, frozen=True):
    id: str | None = None
    meta: Meta | None = None


@final
class Patient(_Resource, frozen=True):
    identifier: tuple[Identifier, ...] = ()
    active: bool | None = None
    name: tuple[HumanName, ...] = ()
    gender: str | None = None
    birth_date: str | None = None
    deceased_boolean: bool | None = None
    deceased_date_time: str | None = None
    address: tuple[Address, ...] = ()


@final
class EncounterLocation(_Element, frozen=True):
    location: Reference | None = None
    status: str | None = None


@final
class Hospitalization(_Element, frozen=True):
    discharge_disposition: CodeableConcept | None = None


@final
class Encounter(_Resource, frozen=True):
    identifier: tuple[Identifier, ...] = ()
    status: str | None = None
    class_: Coding | None = msgspec.field(default=None, name="class")
    priority: CodeableConcept | None = None
    subject: Reference | None = None
    period: Period | None = None
    location: tuple[EncounterLocation, ...] = ()
    hospitalization: Hospitalization | None = None


@final
class Observation(_Resource, frozen=True):
    identifier: tuple[Identifier, ...] = ()
    status: str | None = None
    code: CodeableConcept | None = None
    subject: Reference | None = None
    encounter: Reference | None = None
    based_on: tuple[Reference, ...] = ()
    effective_date_time: str | None = None
    effective_period: Period | None = None
    issued: str | None = None
    value_quantity: Quantity | None = None
    value_string: str | None = None
    value_codeable_concept: CodeableConcept | None = None
    value_boolean: bool | None = None
    value_integer: int | None = None
    value_date_time: str | None = None
    value_time: str | None = None
    value_ratio: Ratio | None = None
    value_range: Range | None = None
    interpretation: tuple[CodeableConcept, ...] = ()
    reference_range: tuple[ReferenceRange, ...] = ()


@final
class DiagnosticReport(_Resource, frozen=True):
    identifier: tuple[Identifier, ...] = ()
    status: str | None = None
    code: CodeableConcept | None = None
    subject: Reference | None = None
    effective_date_time: str | None = None
    issued: str | None = None
    result: tuple[Reference, ...] = ()


@final
class ServiceRequest(_Resource, frozen=True):
    identifier: tuple[Identifier, ...] = ()
    status: str | None = None
    intent: str | None = None
    priority: str | None = None
    code: CodeableConcept | None = None
    subject: Reference | None = None
    authored_on: str | None = None


@final
class DoseAndRate(_Element, frozen=True):
    dose_quantity: Quantity | None = None


@final
class Dosage(_Element, frozen=True):
    text: str | None = None
    dose_and_rate: tuple[DoseAndRate, ...] = ()


@final
class MedicationRequest(_Resource, frozen=True):
    identifier: tuple[Identifier, ...] = ()
    status: str | None = None
    intent: str | None = None
    priority: str | None = None
    medication_codeable_concept: CodeableConcept | None = None
    medication_reference: Reference | None = None
    subject: Reference | None = None
    authored_on: str | None = None
    dosage_instruction: tuple[Dosage, ...] = ()


@final
class AdministrationDosage(_Element, frozen=True):
    text: str | None = None
    dose: Quantity | None = None


@final
class MedicationAdministration(_Resource, frozen=True):
    status: str | None = None
    medication_codeable_concept: CodeableConcept | None = None
    medication_reference: Reference | None = None
    subject: Reference | None = None
    request: Reference | None = None
    effective_date_time: str | None = None
    effective_period: Period | None = None
    dosage: AdministrationDosage | None = None


@final
class Reaction(_Element, frozen=True):
    manifestation: tuple[CodeableConcept, ...] = ()
    severity: str | None = None


@final
class AllergyIntolerance(_Resource, frozen=True):
    clinical_status: CodeableConcept | None = None
    category: tuple[str, ...] = ()
    criticality: str | None = None
    code: CodeableConcept | None = None
    patient: Reference | None = None
    recorded_date: str | None = None
    reaction: tuple[Reaction, ...] = ()


@final
class ClaimItem(_Element, frozen=True):
    product_or_service: CodeableConcept | None = None
    quantity: Quantity | None = None
    net: Money | None = None


@final
class Claim(_Resource, frozen=True):
    status: str | None = None
    patient: Reference | None = None
    created: str | None = None
    total: Money | None = None
    item: tuple[ClaimItem, ...] = ()


@final
class ChargeItem(_Resource, frozen=True):
    status: str | None = None
    subject: Reference | None = None
    code: CodeableConcept | None = None
    quantity: Quantity | None = None
    occurrence_date_time: str | None = None
    price_override: Money | None = None


@final
class Account(_Resource, frozen=True):
    status: str | None = None
    subject: tuple[Reference, ...] = ()
    name: str | None = None


@final
class Invoice(_Resource, frozen=True):
    status: str | None = None
    subject: Reference | None = None
    date: str | None = None
    total_gross: Money | None = None


@final
class MessageSource(_Element, frozen=True):
    name: str | None = None
    endpoint: str | None = None


@final
class MessageHeader(_Resource, frozen=True):
    event_coding: Coding | None = None
    event_uri: str | None = None
    source: MessageSource | None = None
    focus: tuple[Reference, ...] = ()


@final
class BundleEntry(_Element, frozen=True):
    full_url: str | None = None
    resource: msgspec.Raw = msgspec.Raw()
    # Set only on a malformed entry: a resource's fields written into the entry itself.
    resource_type: str | None = msgspec.field(default=None, name="resourceType")


@final
class Bundle(_Resource, frozen=True):
    type: str | None = None
    timestamp: str | None = None
    entry: tuple[BundleEntry, ...] = ()


@final
class RawResource(msgspec.Struct, frozen=True):
    """A resource Vigil does not interpret, with its JSON exactly as received."""

    resource_type: str
    id: str | None
    json: bytes


Resource = (
    Patient
    | Encounter
    | Observation
    | DiagnosticReport
    | ServiceRequest
    | MedicationRequest
    | MedicationAdministration
    | AllergyIntolerance
    | Claim
    | ChargeItem
    | Account
    | Invoice
    | MessageHeader
    | RawResource
)

RESOURCE_TYPES: dict[str, type[_Resource]] = {
    cls.__name__: cls
    for cls in (
        Patient,
        Encounter,
        Observation,
        DiagnosticReport,
        ServiceRequest,
        MedicationRequest,
        MedicationAdministration,
        AllergyIntolerance,
        Claim,
        ChargeItem,
        Account,
        Invoice,
        MessageHeader,
    )
}
