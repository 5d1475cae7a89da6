"""HL7 v2 as FHIR R4 transaction Bundles: valid to a validator nobody here wrote, and saying what the message said.

The corpus tests check every sample message three ways: the Bundle passes
`fhir.resources` (R4B: the same as R4 for these resources); every entry is
an idempotent `PUT Type/id` whose references resolve; and read back through
Vigil's own FHIR intake it gives the results, orders, medications and
allergies that the HL7 v2 mapping gives, an independent cross-check.
"""

from __future__ import annotations

import json
import zoneinfo
from decimal import Decimal
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle
from hypothesis import given
from hypothesis import strategies as st

from engine.core.fhir import bundle_from_hl7v2, decode_document, map_resource, resource_id
from engine.core.fhir.codec import DecodedBundle
from engine.core.fhir.v2_datatypes import date_time
from engine.core.hl7 import escape, map_message, message_id, parse
from engine.core.hl7.encoding import DEFAULT_DELIMITERS
from engine.core.model import AllergyRecorded, MedicationOrdered, ResultReported
from tests.conftest import CORPUS, corpus_files
from tests.harness.fhir_checks import references
from tests.harness.helpers import hl7

HL7_FILES = corpus_files("hl7v2")
UTC = zoneinfo.ZoneInfo("UTC")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def _bundle(raw: bytes, zone: zoneinfo.ZoneInfo = UTC) -> dict[str, object]:
    msg = parse(raw)
    out = bundle_from_hl7v2(msg, message_id(msg), zone)
    assert out is not None
    doc = json.loads(out)
    assert isinstance(doc, dict)
    return doc


def _resources(doc: dict[str, object], rtype: str) -> list[dict[str, object]]:
    entries = doc["entry"]
    assert isinstance(entries, list)
    return [e["resource"] for e in entries if e["resource"]["resourceType"] == rtype]


@pytest.mark.corpus
@pytest.mark.skipif(not HL7_FILES, reason=f"public sample corpus not found at {CORPUS}")
@pytest.mark.parametrize("path", HL7_FILES, ids=lambda p: p.name)
def test_every_corpus_message_is_a_valid_idempotent_transaction(path: Path) -> None:
    raw = path.read_bytes()
    msg = parse(raw)
    out = bundle_from_hl7v2(msg, message_id(msg), NEW_YORK)
    if msg.segment("PID") is None:
        assert out is None
        return
    assert out is not None
    Bundle.model_validate_json(out)  # raises on a missing required element or a malformed value
    assert bundle_from_hl7v2(parse(raw), message_id(msg), NEW_YORK) == out  # the same message, the same bytes
    doc = json.loads(out)
    assert doc["type"] == "transaction"
    urls = {e["fullUrl"] for e in doc["entry"]}
    assert len(urls) == len(doc["entry"])
    targets = set()
    for entry in doc["entry"]:
        resource = entry["resource"]
        assert entry["request"] == {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
        assert entry["fullUrl"] == f"urn:uuid:{resource['id']}"
        targets.add(entry["request"]["url"])
    for reference in references(doc):
        assert reference in targets, reference
    # One Observation per OBX (not in MDM, where OBX is the document's text).
    if msg.message_type.startswith("ORU") or msg.message_type.startswith("OUL"):
        assert len(_resources(doc, "Observation")) == len(msg.all("OBX"))


@pytest.mark.corpus
@pytest.mark.skipif(not HL7_FILES, reason=f"public sample corpus not found at {CORPUS}")
@pytest.mark.parametrize("path", HL7_FILES, ids=lambda p: p.name)
def test_read_back_through_fhir_intake_the_bundle_says_what_the_message_said(path: Path) -> None:
    raw = path.read_bytes()
    msg = parse(raw)
    out = bundle_from_hl7v2(msg, message_id(msg), UTC)
    if out is None:
        return
    decoded = decode_document(out)
    assert isinstance(decoded, DecodedBundle)
    patients = {
        key: key
        for e in decoded.entries
        if e.resource.__class__.__name__ == "Patient"
        for key in (e.full_url or "", f"Patient/{e.resource.id}")
    }
    fhir_events = [ev for e in decoded.entries for ev in map_resource(e.resource, patients)[1]]
    v2_events = map_message(msg).events
    if msg.message_type.split("^")[0] != "MDM":  # in MDM an OBX is the document's text, not a result
        fhir_results = [ev for ev in fhir_events if isinstance(ev, ResultReported)]
        v2_results = [ev for ev in v2_events if isinstance(ev, ResultReported)]
        assert len(fhir_results) == len(v2_results)
        for from_fhir, from_v2 in zip(fhir_results, v2_results, strict=True):
            assert from_fhir.code.code == from_v2.code.code
            assert _value(from_fhir.value) == _v2_value(from_v2), from_v2.value_type
    assert _allergens(fhir_events) == _allergens(v2_events)
    if not msg.all("RXD") and not msg.all("RXA"):  # a dispense or administration fulfils its order in v2's map
        assert _medications(fhir_events) == _medications(v2_events)


def _value(text: str) -> str:
    """A number compares as a number (`6.90` and `6.9` in JSON are one value)."""
    try:
        return str(Decimal(text).normalize()) if text else text
    except ArithmeticError:
        return text


def _v2_value(result: ResultReported) -> str:
    if result.value_type == "ED":
        return ""  # R4's Observation has no attachment value: the transform leaves it out
    if result.value_type in ("DT", "DTM", "TS"):
        return date_time(result.value, UTC) or result.value
    return _value(result.value)


def _allergens(events: object) -> list[str]:
    assert isinstance(events, list | tuple)
    return sorted({ev.allergen.code for ev in events if isinstance(ev, AllergyRecorded) and ev.allergen.code})


def _medications(events: object) -> list[str]:
    assert isinstance(events, list | tuple)
    return sorted(ev.medication.code for ev in events if isinstance(ev, MedicationOrdered))


def _oru(*obx: str, control: str = "C1", pid: str = "PID|1||MRN1^^^GH^MR||DOE^JANE||19700101|F") -> bytes:
    return hl7(
        f"MSH|^~\\&|LAB|GH|EHR|GH|20260115083000||ORU^R01|{control}|P|2.5.1",
        pid,
        "OBR|1|PL1|FL1|2823-3^Potassium^LN|||20260115080000",
        *obx,
    )


def test_ids_follow_what_a_resource_is() -> None:
    first = _bundle(_oru("OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L^mmol/L^UCUM|3.5-5.1|HH|||F"))
    again = _bundle(_oru("OBX|1|NM|2823-3^Potassium^LN||7.0|mmol/L^mmol/L^UCUM|3.5-5.1|HH|||C", control="C2"))
    # The same patient and the same report (its filler number): one resource downstream, updated.
    assert _resources(first, "Patient")[0]["id"] == _resources(again, "Patient")[0]["id"]
    assert _resources(first, "Patient")[0]["id"] == resource_id("Patient", "GH|MRN1")
    assert _resources(first, "DiagnosticReport")[0]["id"] == _resources(again, "DiagnosticReport")[0]["id"]
    # A result is its message's own: a correction is a new Observation that says it corrects.
    assert _resources(first, "Observation")[0]["id"] != _resources(again, "Observation")[0]["id"]
    assert _resources(again, "Observation")[0]["status"] == "corrected"


def test_a_critical_potassium_keeps_its_precision_units_range_and_flag() -> None:
    doc = _bundle(_oru("OBX|1|NM|2823-3^Potassium^LN||6.90|mmol/L^mmol/L^UCUM|3.5-5.1|HH|||F|||20260115081500"))
    [obs] = _resources(doc, "Observation")
    assert obs["valueQuantity"] == {
        "value": 6.9,
        "unit": "mmol/L",
        "system": "http://unitsofmeasure.org",
        "code": "mmol/L",
    }
    text = bundle_from_hl7v2(parse(_oru("OBX|1|NM|X^Y^LN||6.90|mmol/L|||||F")), "id", UTC)
    assert text is not None
    assert b'"value":6.90' in text  # the number as the lab wrote it
    assert obs["interpretation"] == [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "HH"}]}
    ]
    assert obs["referenceRange"] == [{"low": {"value": 3.5}, "high": {"value": 5.1}, "text": "3.5-5.1"}]
    assert obs["effectiveDateTime"] == "2026-01-15T08:15:00+00:00"
    assert obs["code"]["coding"] == [{"system": "http://loinc.org", "code": "2823-3", "display": "Potassium"}]
    [report] = _resources(doc, "DiagnosticReport")
    assert report["result"] == [{"reference": f"Observation/{obs['id']}"}]


@pytest.mark.parametrize(
    ("obx5", "value"),
    [
        ("<^5", {"valueQuantity": {"value": 5, "comparator": "<", "unit": "mg"}}),
        ("^1^:^128", {"valueRatio": {"numerator": {"value": 1}, "denominator": {"value": 128}}}),
        ("^2^-^4", {"valueRange": {"low": {"value": 2, "unit": "mg"}, "high": {"value": 4, "unit": "mg"}}}),
        ("^high", {"valueString": "high"}),
    ],
)
def test_structured_numerics(obx5: str, value: dict[str, object]) -> None:
    [obs] = _resources(_bundle(_oru(f"OBX|1|SN|1^T^LN||{obx5}|mg|||||F")), "Observation")
    assert {k: v for k, v in obs.items() if k.startswith("value")} == value


def test_a_time_without_an_offset_is_read_in_the_routes_zone_daylight_saving_included() -> None:
    assert date_time("20260115083000", NEW_YORK) == "2026-01-15T08:30:00-05:00"
    assert date_time("20260715083000", NEW_YORK) == "2026-07-15T08:30:00-04:00"
    assert date_time("202607150830+0200", NEW_YORK) == "2026-07-15T08:30:00+02:00"
    assert date_time("2026071508", UTC) == "2026-07-15T08:00:00+00:00"
    assert date_time("20260715", NEW_YORK) == "2026-07-15"
    assert date_time("20261315", UTC) is None


def test_an_admission_an_allergy_and_a_pharmacy_order() -> None:
    adt = _bundle(
        hl7(
            "MSH|^~\\&|ADT|GH|EHR|GH|20260115083000||ADT^A01|A1|P|2.5.1",
            "PID|1||MRN1^^^GH^MR||DOE^JANE^Q||19700101|F|||1 Main St^^Springfield^IL^62701",
            "PV1|1|I|ICU^12^A||||||||||||||||V100|||||||||||||||||||||||||20260115080000",
            "AL1|1|DA|7980^Penicillin^RXNORM|SV|Hives~Wheeze",
        )
    )
    [patient] = _resources(adt, "Patient")
    assert patient["gender"] == "female"
    assert patient["birthDate"] == "1970-01-01"
    assert patient["name"] == [{"family": "DOE", "given": ["JANE", "Q"]}]
    assert patient["identifier"][0]["value"] == "MRN1"
    [encounter] = _resources(adt, "Encounter")
    assert encounter["status"] == "in-progress"
    assert encounter["class"]["code"] == "IMP"
    assert encounter["id"] == resource_id("Encounter", "GH|MRN1", "V100")
    [allergy] = _resources(adt, "AllergyIntolerance")
    assert allergy["criticality"] == "high"
    assert allergy["category"] == ["medication"]
    assert allergy["reaction"] == [{"manifestation": [{"text": "Hives"}]}, {"manifestation": [{"text": "Wheeze"}]}]
    rde = _bundle(
        hl7(
            "MSH|^~\\&|PHARM|GH|EHR|GH|20260115083000||RDE^O11|R1|P|2.5.1",
            "PID|1||MRN1^^^GH^MR||DOE^JANE",
            "ORC|NW|ORD1^GH|||||^^^^^S||20260115082000",
            "RXE|^^^^^S|1234^Heparin^RXNORM|5000||units",
        )
    )
    [request] = _resources(rde, "MedicationRequest")
    assert request["status"] == "active"
    assert request["intent"] == "order"
    assert request["priority"] == "stat"
    assert request["dosageInstruction"] == [{"doseAndRate": [{"doseQuantity": {"value": 5000, "unit": "units"}}]}]
    assert request["id"] == resource_id("MedicationRequest", "GH|MRN1", "ORD1")


def test_a_message_sent_at_a_day_not_a_second_is_still_a_valid_bundle() -> None:
    msg = parse(_oru("OBX|1|NM|2823-3^K^LN||4.1||||||F").replace(b"20260115083000", b"20260115"))
    out = bundle_from_hl7v2(msg, message_id(msg), UTC)
    assert out is not None
    Bundle.model_validate_json(out)  # Bundle.timestamp is an instant: left out rather than made up
    assert "timestamp" not in json.loads(out)


def test_a_message_about_no_patient_has_nothing_to_send() -> None:
    msg = parse(hl7("MSH|^~\\&|ADT|GH|EHR|GH|20260115083000||ADT^A20|B1|P|2.5.1", "NPU|ICU^12^A|C"))
    assert bundle_from_hl7v2(msg, message_id(msg), UTC) is None


_TEXT = st.text(st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=40)


@given(text=_TEXT, number=st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-1e6, max_value=1e6))
def test_text_is_data_and_a_number_keeps_its_value(text: str, number: Decimal) -> None:
    """Whatever a sender writes (escaped) comes out as the same text; a number as the same number."""
    field = escape(text, DEFAULT_DELIMITERS)
    raw = _oru(f"OBX|1|ST|1^T^LN||{field}||||||F", f"OBX|2|NM|2^N^LN||{number}||||||F")
    out = bundle_from_hl7v2(parse(raw), "id", UTC)
    assert out is not None
    Bundle.model_validate_json(out)
    first, second = _resources(json.loads(out, parse_float=Decimal, parse_int=Decimal), "Observation")
    # FHIR strings carry no leading or trailing white space (and none that is only that).
    assert first.get("valueString") == (text.strip() or None)
    assert second["valueQuantity"]["value"] == number


def test_a_second_obr_with_the_same_filler_number_keeps_its_results_on_the_report() -> None:
    """One report, named once in the transaction; the results under either OBR point to it."""
    raw = hl7(
        "MSH|^~\\&|LAB|GH|EHR|GH|20260115083000||ORU^R01|C7|P|2.5.1",
        "PID|1||MRN1^^^GH^MR||DOE^JANE",
        "OBR|1|PL1|FL1|2823-3^Potassium^LN",
        "OBX|1|NM|2823-3^Potassium^LN||4.1||||||F",
        "OBR|2|PL1|FL1|2823-3^Potassium^LN",
        "OBX|1|NM|2951-2^Sodium^LN||140||||||F",
    )
    out = bundle_from_hl7v2(parse(raw), "id", UTC)
    assert out is not None
    Bundle.model_validate_json(out)
    doc = json.loads(out)
    [report] = _resources(doc, "DiagnosticReport")
    observations = _resources(doc, "Observation")
    assert all("result" not in o for o in observations)
    assert report["result"] == [{"reference": f"Observation/{o['id']}"} for o in observations]
