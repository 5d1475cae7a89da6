"""Mapping decoded FHIR resources to the model's events and patient keys.

Patient keys use the same `authority|identifier` form as HL7 v2: a Patient's
identifier (type MR preferred), with the identifier system as the authority.
A reference (`subject`, `patient`) is resolved against the Patients of the
same Bundle (by `fullUrl` or `Patient/id`), else by its logical identifier,
else as `Patient|<id>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from engine.core.errors import ErrorLocation, ShapeError
from engine.core.fhir.resources import (
    Account,
    AllergyIntolerance,
    ChargeItem,
    Claim,
    CodeableConcept,
    DiagnosticReport,
    Encounter,
    Invoice,
    MedicationAdministration,
    MedicationRequest,
    MessageHeader,
    Money,
    Observation,
    Patient,
    Quantity,
    RawResource,
    Reference,
    Resource,
    ServiceRequest,
)
from engine.core.model import (
    Admitted,
    AllergyRecorded,
    ChargePosted,
    Coded,
    DemographicsUpdated,
    Discharged,
    DocumentRecorded,
    EncounterCancelled,
    Event,
    MedicationAdministered,
    MedicationOrdered,
    OrderCancelled,
    OrderChanged,
    OrderPlaced,
    ResultReported,
    Unrecognized,
)

__all__ = ["map_resource", "patient_key", "resolve_patient", "resource_type"]

_ACTIVE = frozenset({"arrived", "triaged", "in-progress"})
_CANCELLED = frozenset({"cancelled", "entered-in-error", "revoked", "stopped"})
_CORRECTED = frozenset({"corrected", "amended"})
# Resources about one patient: without a resolvable patient they are refused.
_PATIENT_REQUIRED = (
    Observation,
    Encounter,
    ServiceRequest,
    MedicationRequest,
    MedicationAdministration,
    AllergyIntolerance,
    DiagnosticReport,
)


def resource_type(resource: Resource) -> str:
    """The resourceType of a decoded resource."""
    return resource.resource_type if isinstance(resource, RawResource) else type(resource).__name__


def patient_key(patient: Patient) -> str:
    """`system|value` of the Patient's MR identifier (else its first), else `Patient|id`."""
    chosen = None
    for ident in patient.identifier:
        if ident.value and ident.type is not None and ident.type.first_code() == "MR":
            chosen = ident
            break
    if chosen is None:
        chosen = next((i for i in patient.identifier if i.value), None)
    if chosen is not None:
        return f"{chosen.system or ''}|{chosen.value}"
    return f"Patient|{patient.id or ''}"


def resolve_patient(ref: Reference | None, bundle_patients: Mapping[str, str]) -> str | None:
    """The patient key a reference points at, or None."""
    if ref is None:
        return None
    if ref.reference and ref.reference in bundle_patients:
        return bundle_patients[ref.reference]
    if ref.identifier is not None and ref.identifier.value:
        return f"{ref.identifier.system or ''}|{ref.identifier.value}"
    if ref.reference and ref.reference.startswith("Patient/"):
        return f"Patient|{ref.reference.removeprefix('Patient/')}"
    return None


def _subject(resource: Resource) -> Reference | None:
    if isinstance(resource, AllergyIntolerance | Claim):
        return resource.patient
    if isinstance(resource, Account):
        return resource.subject[0] if resource.subject else None
    return getattr(resource, "subject", None)


def map_resource(
    resource: Resource, bundle_patients: Mapping[str, str], path: str = "$"
) -> tuple[str | None, list[Event]]:
    """The patient key and events of one resource.

    Raises:
        ShapeError: a clinical resource names no patient Vigil can resolve.
    """
    if isinstance(resource, Patient):
        return patient_key(resource), [_demographics(resource)]
    patient = resolve_patient(_subject(resource), bundle_patients)
    if patient is None and isinstance(resource, _PATIENT_REQUIRED):
        element = "patient" if isinstance(resource, AllergyIntolerance) else "subject"
        raise ShapeError(
            f"{resource_type(resource)} names no patient ({element} is missing or unresolvable)",
            ErrorLocation(path=f"{path}.{element}"),
        )
    return patient, _events(resource)


def _coded(concept: CodeableConcept | None) -> Coded:
    if concept is None:
        return Coded("")
    for c in concept.coding:
        if c.code:
            return Coded(c.code, c.display or concept.text or "", c.system or "")
    return Coded("", concept.text or "")


def _amount(value: Decimal | None) -> str:
    return "" if value is None else str(value)


def _money(money: Money | None) -> str:
    return "" if money is None or money.value is None else f"{money.value} {money.currency or ''}".strip()


def _quantity(q: Quantity | None) -> tuple[str, str]:
    if q is None:
        return "", ""
    return _amount(q.value), q.unit or q.code or ""


def _demographics(p: Patient) -> DemographicsUpdated:
    name = next((n for n in p.name if n.use in (None, "official", "usual")), p.name[0] if p.name else None)
    address = p.address[0] if p.address else None
    address_text = ""
    if address is not None:
        parts = [*address.line, address.city, address.state, address.postal_code, address.country]
        address_text = address.text or ", ".join(x for x in parts if x)
    deceased = p.deceased_boolean if p.deceased_boolean is not None else (True if p.deceased_date_time else None)
    return DemographicsUpdated(
        family=(name.family or "") if name else "",
        given=name.given if name else (),
        birth_date=p.birth_date,
        sex=p.gender or "",
        address=address_text,
        deceased=deceased,
    )


def _events(r: Resource) -> list[Event]:  # noqa: PLR0912 -- one branch per resource type reads best
    if isinstance(r, Encounter):
        return [_encounter(r)]
    if isinstance(r, Observation):
        return [_observation(r)]
    if isinstance(r, DiagnosticReport):
        return [
            DocumentRecorded(
                f"DiagnosticReport/{r.id or ''}", _coded(r.code).code, r.status or "", r.issued or r.effective_date_time
            )
        ]
    if isinstance(r, ServiceRequest):
        oid = f"ServiceRequest/{r.id or ''}"
        if r.status in _CANCELLED:
            return [OrderCancelled(oid, r.status or "")]
        if r.status == "active":
            return [OrderPlaced(oid, _coded(r.code), r.priority or "", r.authored_on)]
        return [OrderChanged(oid, r.status or "", _coded(r.code), r.priority or "")]
    if isinstance(r, MedicationRequest):
        oid = f"MedicationRequest/{r.id or ''}"
        if r.status in _CANCELLED:
            return [OrderCancelled(oid, r.status or "")]
        dose = next((d.dose_quantity for i in r.dosage_instruction for d in i.dose_and_rate if d.dose_quantity), None)
        amount, units = _quantity(dose)
        return [MedicationOrdered(oid, _coded(r.medication_codeable_concept), amount, units, r.priority or "")]
    if isinstance(r, MedicationAdministration):
        amount, units = _quantity(r.dosage.dose if r.dosage else None)
        when = r.effective_date_time or (r.effective_period.start if r.effective_period else None)
        order = r.request.reference or "" if r.request else ""
        return [
            MedicationAdministered(order, _coded(r.medication_codeable_concept), amount, units, r.status or "", when)
        ]
    if isinstance(r, AllergyIntolerance):
        reactions = tuple(_coded(m).text or _coded(m).code for x in r.reaction for m in x.manifestation)
        return [AllergyRecorded(_coded(r.code), r.category[0] if r.category else "", r.criticality or "", reactions)]
    if isinstance(r, ChargeItem):
        qty, _ = _quantity(r.quantity)
        return [
            ChargePosted(
                f"ChargeItem/{r.id or ''}",
                _coded(r.code),
                "charge",
                qty,
                _money(r.price_override),
                r.occurrence_date_time,
            )
        ]
    if isinstance(r, Claim):
        code = _coded(r.item[0].product_or_service) if r.item else None
        return [ChargePosted(f"Claim/{r.id or ''}", code, "claim", "", _money(r.total), r.created)]
    if isinstance(r, Invoice):
        return [ChargePosted(f"Invoice/{r.id or ''}", None, "invoice", "", _money(r.total_gross), r.date)]
    if isinstance(r, MessageHeader):
        return []
    return [Unrecognized(resource_type(r), "resource kept whole, not interpreted")]


def _encounter(r: Encounter) -> Event:
    eid = f"Encounter/{r.id or ''}"
    status = r.status or ""
    if status in _CANCELLED:
        return EncounterCancelled(eid, "admission")
    if status == "finished":
        disposition = r.hospitalization.discharge_disposition if r.hospitalization else None
        return Discharged(eid, _coded(disposition).code, r.period.end if r.period else None)
    if status in _ACTIVE:
        loc = next((x.location.display or x.location.reference or "" for x in r.location if x.location), "")
        return Admitted(
            eid,
            r.class_.code or "" if r.class_ else "",
            loc,
            _coded(r.priority).code,
            "",
            r.period.start if r.period else None,
        )
    return Unrecognized("Encounter", f"encounter status {status or 'missing'} kept, not interpreted")


def _observation(r: Observation) -> ResultReported:
    key = (
        f"Observation/{r.id}"
        if r.id
        else next(
            (f"{i.system or ''}|{i.value}" for i in r.identifier if i.value), f"Observation|{_coded(r.code).code}"
        )
    )
    value, units = _quantity(r.value_quantity)
    if r.value_quantity is not None and r.value_quantity.comparator:
        value = f"{r.value_quantity.comparator}{value}"
    if r.value_string is not None:
        value = r.value_string
    elif r.value_codeable_concept is not None:
        coded = _coded(r.value_codeable_concept)
        value = coded.text or coded.code
    elif r.value_boolean is not None:
        value = "true" if r.value_boolean else "false"
    elif r.value_integer is not None:
        value = str(r.value_integer)
    elif r.value_date_time is not None or r.value_time is not None:
        value = r.value_date_time or r.value_time or ""
    elif r.value_ratio is not None:
        value = f"{_quantity(r.value_ratio.numerator)[0]}:{_quantity(r.value_ratio.denominator)[0]}"
    elif r.value_range is not None:
        (value, units), high = _quantity(r.value_range.low), _quantity(r.value_range.high)[0]
        value = f"{value}-{high}"
    ranges = []
    for rr in r.reference_range:
        low, high = _quantity(rr.low)[0], _quantity(rr.high)[0]
        ranges.append(rr.text or f"{low}-{high}")
    flags = tuple(c.code for i in r.interpretation for c in i.coding if c.code)
    status = r.status or ""
    return ResultReported(
        result_key=key,
        code=_coded(r.code),
        value=value,
        value_type="Quantity" if r.value_quantity is not None else "",
        units=units,
        reference_range="; ".join(ranges),
        abnormal_flags=flags,
        status=status,
        effective_at=r.effective_date_time or (r.effective_period.start if r.effective_period else None) or r.issued,
        order_id=r.based_on[0].reference or "" if r.based_on else "",
        corrects=key if status in _CORRECTED else None,
    )
