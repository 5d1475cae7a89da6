"""An HL7 v2 message as a FHIR R4 transaction Bundle, following HL7's v2-to-FHIR segment maps.

PID -> Patient, PV1 -> Encounter, OBR (in a result) -> DiagnosticReport,
OBX -> Observation, ORC + OBR (in an order) -> ServiceRequest, ORC + RXE/RXO
-> MedicationRequest, RXA -> MedicationAdministration (Immunization in a
VXU), AL1/IAM -> AllergyIntolerance. Other segments carry nothing a FHIR
server would store for these resources and are left out.

Every entry is a `PUT Type/id` with an id derived from what the resource
is, so sending the same message twice changes nothing downstream:
- a Patient from its identifier (the key Vigil files the patient under);
- an Encounter from its visit number, an order from its order number, an
  allergy from its allergen: a later message about the same thing updates it;
- a result, an administration, or anything without such a number, from the
  message id and the segment's position.
The ids are UUID v5 in a fixed namespace: the same in every release.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import tzinfo
from typing import Final

import msgspec

from engine.core.fhir.v2_datatypes import (
    Json,
    address,
    codeable,
    date,
    date_time,
    decimal,
    entity_identifier,
    human_name,
    identifier,
    pruned,
    telecom,
)
from engine.core.fhir.v2_vocabulary import (
    ADMINISTRATION_STATUS,
    ALLERGY_CATEGORY,
    ALLERGY_CRITICALITY,
    ENCOUNTER_CLASS,
    GENDER,
    INTERPRETATION_SYSTEM,
    OBSERVATION_STATUS,
    ORDER_CONTROL_STATUS,
    ORDER_STATUS,
    PRIORITY,
    REPORT_STATUS,
    code_system,
)
from engine.core.hl7 import Message, Segment, patient_key

__all__ = ["bundle_from_hl7v2", "resource_id"]

_NAMESPACE: Final = uuid.UUID("6f1c7c52-3a0e-5b8e-9d3f-6a7669676c21")  # never change: ids must stay the same
_ENCODER: Final = msgspec.json.Encoder(decimal_format="number")  # a result's `6.90` goes as the number 6.90
_ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_ORDER_MESSAGES: Final = frozenset({"ORM", "OML", "OMG", "OMI", "OMP"})
_PLANNED: Final = frozenset({"A05", "A14"})
_CANCELLED: Final = frozenset({"A11", "A38", "A27"})
_FINISHED: Final = frozenset({"A03"})
_NUMERIC: Final = frozenset({"NM", "SN"})
_TEXT: Final = frozenset({"ST", "TX", "FT"})
_CODED: Final = frozenset({"CE", "CWE", "CNE", "CF"})
_TIMES: Final = frozenset({"DT", "DTM", "TS"})
_NOT_GIVEN: Final = "998"  # CVX "no vaccine administered"
_NO_DOSE: Final = 999  # RXA-6 "dose unknown"


def resource_id(*parts: str) -> str:
    """A resource id that is the same for the same parts, in every run and every release."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


def bundle_from_hl7v2(msg: Message, message_id: str, zone: tzinfo) -> bytes | None:
    """The message as a transaction Bundle (JSON), or None when it maps to no resource.

    `message_id` is Vigil's id of the message (sender and MSH-10); `zone` is
    where times sent without an offset were written.

    Raises:
        EscapeError: a field it reads holds a malformed escape sequence.
    """
    builder = _Bundle(msg, message_id, zone)
    builder.build()
    if not builder.entries:
        return None
    bundle = pruned(
        {
            "resourceType": "Bundle",
            "id": resource_id("Bundle", message_id),
            "type": "transaction",
            "timestamp": _instant(date_time(msg.segments[0].value(7), zone)),  # an instant: to the second
            "entry": builder.entries,
        }
    )
    return _ENCODER.encode(bundle)


class _Bundle:
    """Walks the message's segments once, keeping the order group and report each belongs to."""

    def __init__(self, msg: Message, message_id: str, zone: tzinfo) -> None:
        self.msg = msg
        self.message_id = message_id
        self.zone = zone
        code, _, self.event = msg.message_type.partition("^")
        self.code = code
        self.entries: list[Json] = []
        self._index: dict[str, int] = {}  # resource id -> its entry
        self.patient: Json | None = None  # the current patient's resource, as in its entry
        self.patient_key = ""
        self.subject: Json | None = None
        self.encounter: Json | None = None
        self.orc: Segment | None = None
        self.report: Json | None = None  # the DiagnosticReport the OBXs being read belong to
        self.report_time: object = None

    def build(self) -> None:
        for position, seg in enumerate(self.msg):
            self._segment(seg, position)

    def _segment(self, seg: Segment, position: int) -> None:
        sid = seg.id
        if sid == "PID":  # a new patient group (a merge message has one per patient)
            self._patient(seg)
            return
        if self.subject is None:
            return  # every resource here is about the patient: before a PID there is nothing to say
        if sid == "MRG":
            self._merge(seg)
        elif sid == "PV1":
            self._encounter(seg)
        elif sid == "ORC":
            self.orc, self.report, self.report_time = seg, None, None
        elif sid == "OBR":
            self._obr(seg, position)
        elif sid == "OBX" and self.code != "MDM":
            self._observation(seg, position)
        elif sid in ("RXE", "RXO"):
            self._medication_request(seg, position)
        elif sid == "RXA":
            if self.code == "VXU":
                self._immunization(seg, position)
            else:
                self._administration(seg, position)
        elif sid in ("AL1", "IAM"):
            self._allergy(seg, position)

    # -- entries ---------------------------------------------------------------------------

    def _add(self, rtype: str, rid: str, resource: Mapping[str, object]) -> Json:
        """Adds a `PUT rtype/rid` entry and returns a reference to it.

        A transaction may name a resource once: a later segment about the same
        one (a visit's second PV1) replaces the entry where it stands.
        """
        body = pruned({"resourceType": rtype, "id": rid, **resource})
        request = {"method": "PUT", "url": f"{rtype}/{rid}"}
        entry: Json = {"fullUrl": f"urn:uuid:{rid}", "resource": body, "request": request}
        if rid in self._index:
            self.entries[self._index[rid]] = entry
        else:
            self._index[rid] = len(self.entries)
            self.entries.append(entry)
        return {"reference": f"{rtype}/{rid}"}

    def _body(self, rid: str) -> Json:
        """The resource of the entry with this id, as it stands in the Bundle (to be filled in further)."""
        body = self.entries[self._index[rid]]["resource"]
        assert isinstance(body, dict)
        return body

    def _sent_at(self) -> str | None:
        """MSH-7: when the message was sent (the time of last resort for a required one)."""
        return date_time(self.msg.segments[0].value(7), self.zone)

    def _own_id(self, rtype: str, position: int) -> str:
        """The id of a resource that is this message's alone (a result, an administration)."""
        return resource_id(rtype, self.message_id, str(position))

    # -- segment maps ------------------------------------------------------------------------

    def _patient(self, pid: Segment) -> None:
        key = patient_key(pid, 3) or patient_key(pid, 2) or patient_key(pid, 4)
        if key is None:
            return
        self.patient_key = key
        idents = [identifier(pid, 3, i + 1) for i in range(len(pid.repetitions(3)))]
        deceased_at = date_time(pid.value(29), self.zone)
        deceased = pid.value(30)
        phones = [telecom(pid, 13, i + 1, "home") for i in range(len(pid.repetitions(13)))]
        phones += [telecom(pid, 14, i + 1, "work") for i in range(len(pid.repetitions(14)))]
        resource = {
            "identifier": [i for i in idents if i is not None],
            "name": [n for i in range(len(pid.repetitions(5))) if (n := human_name(pid, 5, i + 1)) is not None],
            "telecom": [p for p in phones if p is not None],
            "gender": GENDER.get((pid.value(8) or "").upper()),
            "birthDate": date(pid.value(7)),
            "deceasedDateTime": deceased_at,
            "deceasedBoolean": None if deceased_at else {"Y": True, "N": False}.get(deceased or ""),
            "address": [a for i in range(len(pid.repetitions(11))) if (a := address(pid, 11, i + 1)) is not None],
        }
        rid = resource_id("Patient", key)
        self.subject = self._add("Patient", rid, resource)
        self.patient = self._body(rid)
        self.encounter, self.orc, self.report, self.report_time = None, None, None, None

    def _merge(self, mrg: Segment) -> None:
        """MRG: the patient of this group replaces the one it names (Patient.link, as the v2-to-FHIR guide maps it)."""
        merged = identifier(mrg, 1) or identifier(mrg, 4)
        if merged is None or self.patient is None:
            return
        links = self.patient.setdefault("link", [])
        assert isinstance(links, list)
        links.append({"other": {"type": "Patient", "identifier": merged}, "type": "replaces"})

    def _encounter(self, pv1: Segment) -> None:
        visit = pv1.value(19) or ""
        rid = resource_id("Encounter", self.patient_key, visit) if visit else resource_id("Encounter", self.message_id)
        klass = ENCOUNTER_CLASS.get((pv1.value(2) or "").upper())
        where = _location(pv1, 3)
        was = _location(pv1, 6) if self.event == "A02" else ""
        resource = {
            "identifier": [i] if (i := identifier(pv1, 19, type_code="VN")) is not None else None,
            "status": self._encounter_status(pv1),
            "class": {"system": _ACT_CODE, "code": klass[0], "display": klass[1]}
            if klass
            else {"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK"},
            "subject": self.subject,
            "period": pruned(
                {"start": date_time(pv1.value(44), self.zone), "end": date_time(pv1.value(45), self.zone)}
            ),
            "location": [
                loc
                for loc in (
                    {"location": {"display": was}, "status": "completed"} if was else None,
                    {"location": {"display": where}, "status": "active"} if where else None,
                )
                if loc is not None
            ],
            "hospitalization": {"dischargeDisposition": d} if (d := codeable(pv1, 36)) is not None else None,
        }
        self.encounter = self._add("Encounter", rid, resource)

    def _encounter_status(self, pv1: Segment) -> str:
        if self.code == "ADT":
            if self.event in _CANCELLED:
                return "cancelled"
            if self.event in _PLANNED:
                return "planned"
            if self.event in _FINISHED:
                return "finished"
        if pv1.value(45):
            return "finished"
        return "in-progress" if self.code == "ADT" else "unknown"

    def _obr(self, obr: Segment, position: int) -> None:
        code = codeable(obr, 4)
        if self.code in _ORDER_MESSAGES:
            if self.orc is not None and code is not None:
                self._service_request(self.orc, obr, code, position)
            return
        self.report, self.report_time = None, None
        if code is None:
            return  # a report must say what it reports; the results still go
        filler = obr.value(3) or obr.value(2) or ""
        rid = resource_id("DiagnosticReport", self.patient_key, filler) if filler else self._own_id("DR", position)
        resource: Json = {
            "identifier": [
                i for i in (entity_identifier(obr, 2, "PLAC"), entity_identifier(obr, 3, "FILL")) if i is not None
            ],
            "status": REPORT_STATUS.get((obr.value(25) or "").upper(), "unknown"),
            "code": code,
            "subject": self.subject,
            "encounter": self.encounter,
            "effectiveDateTime": date_time(obr.value(7), self.zone),
            "issued": _instant(date_time(obr.value(22), self.zone)),
        }
        earlier = self._body(rid).get("result") if rid in self._index else None  # an OBR again: one report
        self._add("DiagnosticReport", rid, resource)
        self.report = self._body(rid)  # its results join as the OBXs that follow are read
        if isinstance(earlier, list):
            self.report["result"] = earlier
        self.report_time = resource["effectiveDateTime"]

    def _observation(self, obx: Segment, position: int) -> None:
        code = codeable(obx, 3) or {"text": "not coded by the sender"}
        resource: Json = {
            "status": OBSERVATION_STATUS.get((obx.value(11) or "").upper(), "unknown"),
            "code": code,
            "subject": self.subject,
            "encounter": self.encounter,
            "effectiveDateTime": date_time(obx.value(14), self.zone) or self.report_time,
            **_observation_value(obx, self.zone),
            "interpretation": [
                {"coding": [{"system": INTERPRETATION_SYSTEM, "code": flag}]}
                for i in range(len(obx.repetitions(8)))
                if (flag := obx.value(8, i + 1))
            ],
            "referenceRange": [r] if (r := _reference_range(obx.value(7))) is not None else None,
        }
        ref = self._add("Observation", self._own_id("Observation", position), resource)
        if self.report is not None:
            results = self.report.setdefault("result", [])
            assert isinstance(results, list)
            results.append(ref)

    def _service_request(self, orc: Segment, obr: Segment, code: Json, position: int) -> None:
        number = orc.value(2) or obr.value(2) or orc.value(3) or obr.value(3) or ""
        rid = resource_id("ServiceRequest", self.patient_key, number) if number else self._own_id("SR", position)
        resource = {
            "identifier": _order_identifiers(orc),
            "status": _order_status(orc),
            "intent": "order",
            "priority": PRIORITY.get(_priority(orc, obr).upper()),
            "code": code,
            "subject": self.subject,
            "encounter": self.encounter,
            "authoredOn": date_time(orc.value(9), self.zone),
        }
        self._add("ServiceRequest", rid, resource)

    def _medication_request(self, rx: Segment, position: int) -> None:
        orc = self.orc
        number = (orc.value(2) or orc.value(3) or "") if orc is not None else ""
        rid = resource_id("MedicationRequest", self.patient_key, number) if number else self._own_id("MR", position)
        give, dose, units = (2, 3, 5) if rx.id == "RXE" else (1, 2, 4)
        amount = decimal(rx.value(dose))
        status = _order_status(orc) if orc is not None else "unknown"
        resource = {
            "identifier": _order_identifiers(orc) if orc is not None else None,
            "status": {"revoked": "cancelled"}.get(status, status),
            "intent": "order",
            "priority": PRIORITY.get(_priority(orc, None).upper()) if orc is not None else None,
            "medicationCodeableConcept": codeable(rx, give) or {"text": "not coded by the sender"},
            "subject": self.subject,
            "encounter": self.encounter,
            "authoredOn": date_time(orc.value(9), self.zone) if orc is not None else None,
            "dosageInstruction": [
                {"doseAndRate": [{"doseQuantity": _quantity(amount, rx, units)}]} if amount is not None else None
            ]
            if amount is not None
            else None,
        }
        self._add("MedicationRequest", rid, resource)

    def _administration(self, rxa: Segment, position: int) -> None:
        amount = decimal(rxa.value(6))
        start, end = date_time(rxa.value(3), self.zone), date_time(rxa.value(4), self.zone)
        order = self.orc.value(2) or self.orc.value(3) if self.orc is not None else None
        resource = {
            "status": ADMINISTRATION_STATUS.get((rxa.value(20) or "").upper(), "completed"),
            "medicationCodeableConcept": codeable(rxa, 5) or {"text": "not coded by the sender"},
            "subject": self.subject,
            "context": self.encounter,
            "effectiveDateTime": start if not end or end == start else None,
            "effectivePeriod": {"start": start, "end": end} if start and end and end != start else None,
            "request": {"identifier": {"value": order}} if order else None,
            "dosage": {"dose": _quantity(amount, rxa, 7)} if amount is not None else None,
        }
        if resource["effectiveDateTime"] is None and resource["effectivePeriod"] is None:
            resource["effectiveDateTime"] = self._sent_at()  # required: when the sender said it happened
        self._add("MedicationAdministration", self._own_id("MedicationAdministration", position), resource)

    def _immunization(self, rxa: Segment, position: int) -> None:
        vaccine = codeable(rxa, 5) or {"text": "not coded by the sender"}
        amount = decimal(rxa.value(6))
        given = (rxa.value(5) or "") != _NOT_GIVEN and (rxa.value(20) or "").upper() not in ("RE", "NA")
        resource = {
            "status": "completed" if given else "not-done",
            "vaccineCode": vaccine,
            "patient": self.subject,
            "encounter": self.encounter,
            "occurrenceDateTime": date_time(rxa.value(3), self.zone) or self._sent_at(),
            "lotNumber": rxa.value(15),
            "expirationDate": date(rxa.value(16)),
            "manufacturer": {"display": m} if (m := rxa.value(17, 1, 2) or rxa.value(17)) else None,
            "doseQuantity": _quantity(amount, rxa, 7) if amount is not None and amount != _NO_DOSE else None,
        }
        self._add("Immunization", self._own_id("Immunization", position), resource)

    def _allergy(self, seg: Segment, position: int) -> None:
        allergen = codeable(seg, 3)
        if allergen is None:
            return  # an allergy to nothing named says nothing a receiver can act on
        code = seg.value(3) or seg.value(3, 1, 2) or ""
        rid = resource_id("AllergyIntolerance", self.patient_key, code) if code else self._own_id("AI", position)
        category = ALLERGY_CATEGORY.get((seg.value(2) or "").upper())
        resource = {
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}
                ]
            },
            "category": [category] if category else None,
            "criticality": ALLERGY_CRITICALITY.get((seg.value(4) or "").upper()),
            "code": allergen,
            "patient": self.subject,
            "onsetDateTime": date(seg.value(6)) if seg.id == "AL1" else None,
            "reaction": [
                {"manifestation": [{"text": r}]} for i in range(len(seg.repetitions(5))) if (r := seg.value(5, i + 1))
            ],
        }
        self._add("AllergyIntolerance", rid, resource)


def _location(pv1: Segment, field: int) -> str:
    return "/".join(c for c in pv1.components(field)[:4] if c)


def _instant(value: str | None) -> str | None:
    """A FHIR `instant` needs seconds and an offset: a coarser time is left out."""
    return value if value is not None and len(value) >= 20 else None


def _order_identifiers(orc: Segment) -> list[Json]:
    return [i for i in (entity_identifier(orc, 2, "PLAC"), entity_identifier(orc, 3, "FILL")) if i is not None]


def _order_status(orc: Segment) -> str:
    status = ORDER_STATUS.get((orc.value(5) or "").upper())
    return status or ORDER_CONTROL_STATUS.get((orc.value(1) or "").upper(), "unknown")


def _priority(orc: Segment | None, obr: Segment | None) -> str:
    if orc is not None and orc.value(7, 1, 6):
        return orc.value(7, 1, 6) or ""
    if obr is not None:
        return obr.value(27, 1, 6) or obr.value(5) or ""
    return ""


def _quantity(amount: object, seg: Segment, units_field: int) -> Json:
    """A Quantity; the units are UCUM (with a system) only when the sender says so."""
    code, text, system_name = (seg.value(units_field, 1, c) or "" for c in (1, 2, 3))
    system = code_system(system_name) if system_name else None
    return pruned(
        {
            "value": amount,
            "unit": text or code,
            "system": system if system == "http://unitsofmeasure.org" else None,
            "code": code if system == "http://unitsofmeasure.org" else None,
        }
    )


def _observation_value(obx: Segment, zone: tzinfo) -> Json:
    """OBX-5 as the value[x] its type (OBX-2) calls for; a number that is not one goes as text."""
    vtype = (obx.value(2) or "").upper()
    reps = obx.repetitions(5)
    if not reps or not reps[0]:
        return {}
    if vtype in _CODED:
        return {"valueCodeableConcept": codeable(obx, 5)}
    if vtype == "NM":
        amount = decimal(obx.value(5))
        if amount is not None:
            return {"valueQuantity": _quantity(amount, obx, 6)}
    if vtype == "SN":
        return _structured_numeric(obx)
    if vtype in _TIMES:
        when = date_time(obx.value(5), zone)
        if when is not None:
            return {"valueDateTime": when}
    if vtype in _TEXT:  # text's repetitions are its lines
        return {"valueString": "\n".join(obx.value(5, i + 1) or "" for i in range(len(reps)))}
    if vtype in _NUMERIC or vtype in _TIMES or vtype in ("", "TM", "ID", "IS", "RP"):
        return {"valueString": obx.value(5)}
    return {}  # ED: R4's Observation has no attachment value (R5 adds one); the message keeps it


def _structured_numeric(obx: Segment) -> Json:
    """SN: `<^5` a bound, `^1^:^128` a ratio, `^2^-^4` a range, `^7` a plain number."""
    comps = [*obx.components(5), "", "", "", ""]
    comparator, first, separator, second = comps[:4]
    low = decimal(first)
    if low is None:
        return {"valueString": "".join(obx.components(5))}
    if separator in (":", "/") and (high := decimal(second)) is not None:
        return {"valueRatio": {"numerator": {"value": low}, "denominator": {"value": high}}}
    if separator == "-" and (high := decimal(second)) is not None:
        return {"valueRange": {"low": _quantity(low, obx, 6), "high": _quantity(high, obx, 6)}}
    quantity = _quantity(low, obx, 6)
    if comparator in ("<", "<=", ">", ">="):
        quantity = {**quantity, "comparator": comparator}
    return {"valueQuantity": quantity}


def _reference_range(text: str | None) -> Json | None:
    """OBX-7 as written, and as low/high when it is `low-high`."""
    if not text:
        return None
    low, sep, high = text.partition("-")
    low_value, high_value = decimal(low), decimal(high)
    if sep and low_value is not None and high_value is not None:
        return {"low": {"value": low_value}, "high": {"value": high_value}, "text": text}
    return {"text": text}
