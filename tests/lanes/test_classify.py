"""Lane classification: every rule of DESIGN.md's lane table, precedence, config."""

from __future__ import annotations

import json

import pytest

from engine.core.errors import HeaderError
from engine.core.fhir import decode_document
from engine.core.fhir.resources import Meta, Resource
from engine.core.model import Lane
from lanes import Classification, ClassificationRules, Classifier
from tests.harness.helpers import PID, hl7, oru

C = Classifier()


def _msh(mtype: str, processing: str = "P") -> str:
    return f"MSH|^~\\&|APP|FAC|VIGIL|FAC|20261124||{mtype}|C1|{processing}|2.5.1"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (oru("OBX|1|NM|2823-3^K^LN||6.9|mmol/L|3.5-5.1|HH|||F"), "critical result (OBX-8=HH)"),
        (oru("OBX|1|NM|2823-3^K^LN||1.9|mmol/L|3.5-5.1|LL|||F"), "critical result (OBX-8=LL)"),
        (oru("OBX|1|ST|X||pos|||N~AA|||F"), "critical result (OBX-8=AA)"),
        (oru("OBX|1|NM|2823-3^K^LN||4.1|mmol/L|3.5-5.1|N|||C"), "result correction (OBX-11=C)"),
        (oru("OBX|1|NM|2823-3^K^LN||4.1|mmol/L|3.5-5.1|N|||W"), "result correction (OBX-11=W)"),
        (oru(obr="OBR|1|P|F|X|S"), "STAT order (OBR-5=S)"),
        (oru(obr="OBR|1|P|F|X" + "|" * 21 + "C"), "result correction (OBR-25=C)"),
        (oru(obr="OBR|1|P|F|X" + "|" * 23 + "^^^^^S"), "STAT order (OBR-27.6)"),
        (hl7(_msh("ORM^O01"), PID, "ORC|NW|P1|||||^^^^^S", "OBR|1|P1||X"), "STAT order (ORC-7.6)"),
        (hl7(_msh("ORM^O01"), PID, "ORC|NW|P1", "OBR|1|P1||X", "TQ1|1||||||||S^Stat^HL70485"), "STAT order (TQ1-9)"),
        (hl7(_msh("ADT^A01"), PID, "PV1|1|E|ED^1|E"), "emergency admission (PV1-4=E)"),
    ],
)
def test_critical_rules(raw: bytes, reason: str) -> None:
    """Each critical rule of the lane table sends the message to critical, naming the field."""
    assert Classification(Lane.CRITICAL, reason) == C.classify_hl7(raw)


@pytest.mark.parametrize(
    ("raw", "lane", "reason"),
    [
        (oru("OBX|1|NM|2823-3^K^LN||4.1|mmol/L|3.5-5.1|N|||F"), Lane.STANDARD, "clinical traffic (MSH-9=ORU^R01)"),
        (oru("OBX|1|NM|2823-3^K^LN||5.4|mmol/L|3.5-5.1|H|||F"), Lane.STANDARD, "clinical traffic (MSH-9=ORU^R01)"),
        (hl7(_msh("ADT^A08"), PID, "PV1|1|E|ED^1|E"), Lane.STANDARD, "clinical traffic (MSH-9=ADT^A08)"),
        (hl7(_msh("DFT^P03"), PID, "FT1|1"), Lane.BATCH, "batch message type (MSH-9=DFT^P03)"),
        (hl7(_msh("BAR^P01"), PID), Lane.BATCH, "batch message type (MSH-9=BAR^P01)"),
        (hl7(_msh("DFT^P11"), PID), Lane.STANDARD, "clinical traffic (MSH-9=DFT^P11)"),
        (hl7(_msh("MFN^M02"), "MFI|PRA"), Lane.BATCH, "batch message type (MSH-9=MFN^M02)"),
        (hl7(_msh("RDE^O11"), PID, "ORC|NW|RX1"), Lane.STANDARD, "clinical traffic (MSH-9=RDE^O11)"),
    ],
)
def test_standard_and_batch_rules(raw: bytes, lane: Lane, reason: str) -> None:
    """High-normal results, emergency-patient updates and pharmacy are standard; billing is batch."""
    assert Classification(lane, reason) == C.classify_hl7(raw)


def test_non_production_traffic_is_batch_and_flagged_even_when_critical() -> None:
    """MSH-11 = T: a test message never takes critical capacity."""
    raw = oru("OBX|1|NM|K||6.9|||HH", msh=_msh("ORU^R01", processing="T"))
    assert Classification(Lane.BATCH, "non-production traffic (MSH-11=T)", non_production=True) == C.classify_hl7(raw)


def test_critical_wins_over_batch_file_origin() -> None:
    """A critical result inside a batch file is still critical; other batch-file messages are batch."""
    critical = oru("OBX|1|NM|K||6.9|||HH")
    routine = oru("OBX|1|NM|K||4.1|||N")
    assert C.classify_hl7(critical, in_batch=True).lane is Lane.CRITICAL
    assert Classification(Lane.BATCH, "batch file (FHS/BHS envelope)") == C.classify_hl7(routine, in_batch=True)


def test_local_flags_and_rules_from_config() -> None:
    """A site's own OBX-8 codes and batch types come from config."""
    rules = ClassificationRules(local_critical_flags=("CRIT",), batch_message_types=("SIU",))
    c = Classifier(rules)
    assert c.classify_hl7(oru("OBX|1|NM|K||7.2|||CRIT")).lane is Lane.CRITICAL
    assert c.classify_hl7(hl7(_msh("SIU^S12"), PID)).lane is Lane.BATCH
    assert C.classify_hl7(oru("OBX|1|NM|K||7.2|||CRIT")).lane is Lane.STANDARD


def test_declared_delimiters_are_used_for_classification() -> None:
    """Classification reads the message's own separators, not `|^~`."""
    raw = hl7("MSH#$*@!#A#B#C#D#2026##ORU$R01#C1#P#2.5.1", "PID#1##M1$$$H$MR", "OBX#1#NM#K##6.9###N*HH")
    assert C.classify_hl7(raw) == Classification(Lane.CRITICAL, "critical result (OBX-8=HH)")


def test_classification_does_not_need_a_valid_body() -> None:
    """Cheap: only the header and priority segments are read, so a body error shows later."""
    raw = hl7(_msh("ORU^R01"), "garbage line", "OBX|1|NM|K||6.9|||HH")
    assert C.classify_hl7(raw).lane is Lane.CRITICAL


def test_no_header_is_a_typed_error() -> None:
    """Without MSH there is nothing to classify."""
    with pytest.raises(HeaderError):
        C.classify_hl7(b"PID|1||x")


def _fhir(doc: dict[str, object]) -> Resource:
    decoded = decode_document(json.dumps(doc).encode())
    assert not hasattr(decoded, "entries")
    return decoded  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("doc", "lane", "reason"),
    [
        (
            {"resourceType": "ServiceRequest", "priority": "stat"},
            Lane.CRITICAL,
            "STAT order (ServiceRequest.priority=stat)",
        ),
        (
            {"resourceType": "MedicationRequest", "priority": "stat"},
            Lane.CRITICAL,
            "STAT order (MedicationRequest.priority=stat)",
        ),
        ({"resourceType": "ServiceRequest", "priority": "routine"}, Lane.STANDARD, "clinical traffic (ServiceRequest)"),
        (
            {"resourceType": "Observation", "interpretation": [{"coding": [{"code": "HH"}]}]},
            Lane.CRITICAL,
            "critical result (Observation.interpretation=HH)",
        ),
        (
            {"resourceType": "Observation", "status": "amended"},
            Lane.CRITICAL,
            "result correction (Observation.status=amended)",
        ),
        (
            {"resourceType": "DiagnosticReport", "status": "corrected"},
            Lane.CRITICAL,
            "result correction (DiagnosticReport.status=corrected)",
        ),
        (
            {"resourceType": "Encounter", "status": "in-progress", "class": {"code": "EMER"}},
            Lane.CRITICAL,
            "emergency admission (Encounter.class=EMER)",
        ),
        (
            {"resourceType": "Encounter", "status": "finished", "class": {"code": "EMER"}},
            Lane.STANDARD,
            "clinical traffic (Encounter)",
        ),
        ({"resourceType": "Claim"}, Lane.BATCH, "billing resource (Claim)"),
        ({"resourceType": "Invoice"}, Lane.BATCH, "billing resource (Invoice)"),
        ({"resourceType": "Basic"}, Lane.STANDARD, "clinical traffic (Basic)"),
    ],
)
def test_fhir_rules(doc: dict[str, object], lane: Lane, reason: str) -> None:
    """FHIR resources follow the same lane table."""
    assert Classification(lane, reason) == C.classify_fhir([_fhir(doc)])


def test_fhir_test_tag_is_batch_and_flagged() -> None:
    """meta.tag HTEST marks test data: batch lane, flagged, even if critical."""
    obs = _fhir({"resourceType": "Observation", "interpretation": [{"coding": [{"code": "HH"}]}]})
    result = C.classify_fhir([obs], [Meta(tag=(_coding("HTEST"),))])
    assert (result.lane, result.non_production) == (Lane.BATCH, True)


def _coding(code: str) -> object:
    from engine.core.fhir.resources import Coding

    return Coding(code=code)


def test_fhir_most_urgent_resource_wins() -> None:
    """A document's lane is its most urgent resource's."""
    claim = _fhir({"resourceType": "Claim"})
    stat = _fhir({"resourceType": "ServiceRequest", "priority": "stat"})
    assert C.classify_fhir([claim, stat]).lane is Lane.CRITICAL
    assert C.classify_fhir([]).lane is Lane.STANDARD
