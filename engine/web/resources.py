"""A patient's record (`actors.RecordView`) as FHIR R4 resources. Pure: no I/O.

The record is Vigil's own fold of what it received, so these resources are
built from it, whichever way a fact arrived (HL7 v2 or FHIR):
Patient, Observation (one per result, as it now stands, with its version
count), Encounter, MedicationRequest, MedicationAdministration and
AllergyIntolerance.

Ids:
- a Patient's id is its key (`authority|identifier`) written in FHIR's id
  alphabet: letters, digits and `.` kept, every other byte as `-XX` (hex),
  so `HOSP|12345` is `HOSP-7C12345`, and the key is read back from the id;
- every other resource's id is a UUID v5 of the patient and what the
  resource is (the result key, the encounter number, the order number):
  the same in every read and every release.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Final

from actors import EncounterView, MedicationView, RecordView, ResultView
from engine.core.fhir import (
    ENCOUNTER_CLASS,
    GENDER,
    INTERPRETATION_SYSTEM,
    OBSERVATION_STATUS,
    Json,
    code_system,
    fhir_string,
    pruned,
    resource_id,
)
from engine.core.model import AllergyRecorded, Coded, MedicationAdministered, MedicationOrdered

__all__ = [
    "READABLE_TYPES",
    "key_of_patient_id",
    "observation",
    "patient_id",
    "patient_reference",
    "resources_of",
]

_KEPT: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.")
_ESCAPED: Final = re.compile(r"(?:[A-Za-z0-9.]|-[0-9A-F]{2})+")
_ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_FHIR_OBSERVATION_STATUS: Final = frozenset(
    {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"}
)
_ENCOUNTER_STATUS: Final = {
    "admitted": "in-progress",
    "transferred": "in-progress",
    "discharged": "finished",
    "cancelled": "cancelled",
}
_ABSENT: Final = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
_MEDICATION_STATUS: Final = {"cancelled": "cancelled", "administered": "completed"}
_NUMERIC: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")


def patient_id(key: str) -> str:
    """The FHIR id of the patient filed under `key` (reversible: `key_of_patient_id`)."""
    return "".join(chr(b) if b in _KEPT else f"-{b:02X}" for b in key.encode())


def key_of_patient_id(rid: str) -> str | None:
    """The patient key a Patient id stands for; None for text that is not such an id."""
    if _ESCAPED.fullmatch(rid) is None:
        return None
    out = bytearray()
    i = 0
    while i < len(rid):
        if rid[i] == "-":
            out.append(int(rid[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(rid[i]))
            i += 1
    try:
        return out.decode()
    except UnicodeDecodeError:
        return None


def patient_reference(key: str) -> Json:
    return {"reference": f"Patient/{patient_id(key)}"}


def _patient(view: RecordView) -> list[Json]:
    authority, _, value = view.patient.partition("|")
    identifier = pruned(
        {
            "system": authority if ":" in authority else None,  # a URI already; a namespace is not one
            "value": value or view.patient,
            "assigner": pruned({"display": authority}) if authority and ":" not in authority else None,
        }
    )
    d = view.demographics
    name = pruned({"family": d.family, "given": list(d.given)}) if d is not None else {}
    resource = pruned(
        {
            "resourceType": "Patient",
            "id": patient_id(view.patient),
            "meta": {"versionId": str(view.last_lsn)},
            "identifier": [identifier],
            "name": [name] if name else None,
            "gender": _gender(d.sex) if d is not None else None,
            "birthDate": _date(d.birth_date) if d is not None else None,
            "deceasedBoolean": d.deceased if d is not None else None,
            "address": [{"text": d.address}] if d is not None and d.address.strip() else None,
            "link": [{"other": patient_reference(merged), "type": "replaces"} for merged in view.merged_from],
        }
    )
    return [resource]


def observation(patient: str, subject: Json, result: ResultView) -> Json:
    """A result as it stands, as an Observation of `subject` (the patient's reference, shared by a record's)."""
    # Built member by member, not through `pruned`: a record's results are made by the thousand
    # (`$everything` of a record not read before).
    r = result.current
    out: Json = {
        "resourceType": "Observation",
        "id": _observation_id(patient, result.result_key),
        "meta": {"versionId": str(len(result.versions))},
        "identifier": [{"system": "urn:vigil:result-key", "value": result.result_key}],
        "status": _observation_status(r.status),
        "code": _concept(r.code),
        "subject": subject,
    }
    effective = _date_time(result.effective_at)
    if effective is not None:
        out["effectiveDateTime"] = effective
    out.update(_value(r.value, r.value_type, r.units))
    flags = [f for f in r.abnormal_flags if f]
    if flags:
        out["interpretation"] = [{"coding": [{"system": INTERPRETATION_SYSTEM, "code": f}]} for f in flags]
    reference_range = _clean(r.reference_range)
    if reference_range is not None:
        out["referenceRange"] = [{"text": reference_range}]
    return out


@functools.lru_cache(maxsize=65_536)
def _observation_id(patient: str, result_key: str) -> str:
    return resource_id("Observation", patient, result_key)  # a UUID v5 (SHA-1): worth keeping, read after read


def _observations(view: RecordView) -> list[Json]:
    subject = patient_reference(view.patient)  # one per record, shared: never changed once made
    return [observation(view.patient, subject, r) for r in view.results]


def _encounter(patient: str, e: EncounterView) -> Json:
    klass = ENCOUNTER_CLASS.get(e.patient_class.upper())
    return pruned(
        {
            "resourceType": "Encounter",
            "id": resource_id("Encounter", patient, e.encounter_id),
            "identifier": [{"value": e.encounter_id}] if e.encounter_id else None,
            "status": _ENCOUNTER_STATUS.get(e.status, "unknown"),
            "class": {"system": _ACT_CODE, "code": klass[0], "display": klass[1]}
            if klass
            else {"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK"},
            "subject": patient_reference(patient),
            "period": pruned({"start": _date_time(e.admitted_at), "end": _date_time(e.discharged_at)}),
            "location": [{"location": {"display": e.location}}] if e.location.strip() else None,
        }
    )


def _encounters(view: RecordView) -> list[Json]:
    return [_encounter(view.patient, e) for e in view.encounters]


def _medication_request(patient: str, m: MedicationView) -> Json | None:
    ordered = next((e for e in m.events if isinstance(e, MedicationOrdered)), None)
    if ordered is None:
        return None  # an administration or a dispensing with no order seen: no request to show
    dose = _quantity(ordered.dose, ordered.units)
    return pruned(
        {
            "resourceType": "MedicationRequest",
            "id": resource_id("MedicationRequest", patient, m.order_id),
            "identifier": [{"value": m.order_id}] if m.order_id else None,
            "status": _MEDICATION_STATUS.get(m.status, "active"),
            "intent": "order",
            "medicationCodeableConcept": _concept(ordered.medication),
            "subject": patient_reference(patient),
            "dosageInstruction": [{"doseAndRate": [{"doseQuantity": dose}]}] if dose else None,
        }
    )


def _medication_requests(view: RecordView) -> list[Json]:
    return [r for m in view.medications if (r := _medication_request(view.patient, m)) is not None]


def _administrations(view: RecordView) -> list[Json]:
    out: list[Json] = []
    for m in view.medications:
        given = [e for e in m.events if isinstance(e, MedicationAdministered)]
        for n, e in enumerate(given):
            dose = _quantity(e.dose, e.units)
            out.append(
                pruned(
                    {
                        "resourceType": "MedicationAdministration",
                        "id": resource_id("MedicationAdministration", view.patient, m.order_id, str(n)),
                        "status": _administration_status(e.status),
                        "medicationCodeableConcept": _concept(e.medication),
                        "subject": patient_reference(view.patient),
                        **_effective(e.administered_at),
                        "request": {"identifier": {"value": m.order_id}} if m.order_id else None,
                        "dosage": {"dose": dose} if dose else None,
                    }
                )
            )
    return out


def _effective(text: str | None) -> Json:
    """effective[x] is required: a time the sender left out is said to be unknown, not made up."""
    moment = _date_time(text)
    if moment is not None:
        return {"effectiveDateTime": moment}
    return {"_effectiveDateTime": {"extension": [{"url": _ABSENT, "valueCode": "unknown"}]}}


def _allergy(patient: str, a: AllergyRecorded) -> Json:
    category = {"DA": "medication", "FA": "food", "EA": "environment", "MA": "medication"}.get(a.category.upper())
    return pruned(
        {
            "resourceType": "AllergyIntolerance",
            "id": resource_id("AllergyIntolerance", patient, a.allergen.code or a.allergen.text),
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}
                ]
            },
            "category": [category] if category else None,
            "criticality": {"SV": "high", "MO": "low", "MI": "low"}.get(a.severity.upper()),
            "code": _concept(a.allergen),
            "patient": patient_reference(patient),
            "reaction": [{"manifestation": [{"text": r}]} for r in a.reactions if r.strip()],
        }
    )


def _allergies(view: RecordView) -> list[Json]:
    return [_allergy(view.patient, a) for a in view.allergies]


# Each resource type this server reads, and how it is made from a record.
_MAKERS: Final[Mapping[str, Callable[[RecordView], list[Json]]]] = {
    "Patient": _patient,
    "Observation": _observations,
    "Encounter": _encounters,
    "MedicationRequest": _medication_requests,
    "MedicationAdministration": _administrations,
    "AllergyIntolerance": _allergies,
}
READABLE_TYPES: Final = tuple(_MAKERS)


def resources_of(view: RecordView, resource_type: str) -> list[Json]:
    """The record's resources of one type (`READABLE_TYPES`), in the record's order."""
    return _MAKERS[resource_type](view)


# -- data types ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _concept(coded: Coded) -> Json:
    """A CodeableConcept; the same code in many results is made once (the dict is shared: never changed)."""
    system = coded.system if ":" in coded.system else code_system(coded.system) if coded.system else None
    coding = pruned({"system": system, "code": coded.code, "display": coded.text})
    concept = pruned({"coding": [coding] if coded.code.strip() else None, "text": coded.text})
    return concept or {"text": "not coded by the sender"}  # required where it is used: said, not left out


def _clean(text: str) -> str | None:
    """Text as FHIR allows a string (`fhir_string`), None when nothing is left; printable text takes the quick way."""
    kept = text.strip() if text.isprintable() else fhir_string(text)
    return kept or None


def _value(value: str, value_type: str, units: str) -> Json:
    text = _clean(value)
    if text is None:
        return {}
    if value_type in ("NM", "SN", "Quantity", "") and _NUMERIC.fullmatch(text):
        quantity: Json = {"value": float(text) if "." in text else int(text)}
        unit = _clean(units)
        if unit is not None:
            quantity["unit"] = unit
        return {"valueQuantity": quantity}
    return {"valueString": text}


def _quantity(amount: str, units: str) -> Json:
    text = amount.strip()
    if not _NUMERIC.fullmatch(text):
        return {}
    return pruned({"value": float(text) if "." in text else int(text), "unit": units})


def _observation_status(status: str) -> str:
    if status in _FHIR_OBSERVATION_STATUS:
        return status
    return OBSERVATION_STATUS.get(status.upper(), "unknown")


def _administration_status(status: str) -> str:
    known = {"in-progress", "not-done", "on-hold", "completed", "entered-in-error", "stopped", "unknown"}
    if status in known:
        return status
    return {"CP": "completed", "RE": "not-done", "NA": "not-done", "PA": "completed"}.get(status.upper(), "completed")


def _gender(sex: str) -> str | None:
    if sex in ("male", "female", "other", "unknown"):
        return sex
    return GENDER.get(sex.upper())


def _date(text: str | None) -> str | None:
    return text[:10] if text and re.fullmatch(r"\d{4}(-\d{2}(-\d{2})?)?", text[:10]) else None


@functools.lru_cache(maxsize=4096)
def _date_time(text: str | None) -> str | None:
    """A FHIR dateTime: a time needs an offset, so one sent without is UTC (as the record reads it)."""
    if not text:
        return None
    stripped = text.strip()
    if len(stripped) <= 10:
        return _date(stripped)
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()
