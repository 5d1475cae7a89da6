"""Mapping HL7 v2 messages to the model: identity, patient keys and clinical events."""

from __future__ import annotations

import pytest

from engine.core.errors import MissingFieldError
from engine.core.hl7 import map_message, parse
from engine.core.model import (
    Admitted,
    AllergyRecorded,
    ChargePosted,
    Coded,
    DemographicsUpdated,
    Discharged,
    DocumentRecorded,
    EncounterCancelled,
    MedicationAdministered,
    MedicationDispensed,
    MedicationOrdered,
    OrderCancelled,
    OrderPlaced,
    PatientMerged,
    ResultReported,
    Transferred,
    Unrecognized,
)
from tests.harness.helpers import PID, hl7, oru


def _msh(mtype: str, control: str = "C1", version: str = "2.5.1") -> str:
    return f"MSH|^~\\&|APP|FAC|VIGIL|FAC|20261124101500||{mtype}|{control}|P|{version}"


def test_message_id_is_sender_facility_and_control_id() -> None:
    """Invariant 4: the id is stable across redelivery of the same message."""
    mapped = map_message(parse(oru()))
    assert mapped.message_id == "hl7:LAB|GENHOSP|MSG0001"
    assert map_message(parse(oru())).message_id == mapped.message_id


def test_patient_key_prefers_the_mr_identifier() -> None:
    """PID-3 repeats; the MR (medical record number) one is the key."""
    assert map_message(parse(oru())).patient == "GENHOSP|MRN42"


def test_patient_key_without_type_code_takes_the_first() -> None:
    """No MR type code: the first identifier with a value, authority from CX-4."""
    raw = hl7(_msh("ADT^A08"), "PID|1||^^^X~777^^^&1.2.3&ISO")
    assert map_message(parse(raw)).patient == "1.2.3|777"


def test_admission_maps_demographics_and_encounter() -> None:
    """ADT^A01: demographics from PID, an admission from PV1 (location, type, time)."""
    raw = hl7(
        _msh("ADT^A01^ADT_A01"),
        "EVN|A01|20261124101000",
        PID,
        "PV1|1|I|ICU^12^B^GENHOSP|E|||99^Meyer^Ada||||||||||||V100" + "|" * 25 + "20261124100500",
        "AL1|1|DA|70618^Penicillin^RXNORM|SV|Hives~Wheezing",
    )
    events = map_message(parse(raw)).events
    assert events[0] == DemographicsUpdated(
        family="Doe",
        given=("Jane", "Q"),
        birth_date="1970-01-01",
        sex="F",
        address="1 Main St, Springfield, 01101",
    )
    assert events[1] == Admitted(
        encounter_id="V100",
        patient_class="I",
        location="ICU/12/B/GENHOSP",
        admission_type="E",
        attending="99 Meyer Ada",
        admitted_at="2026-11-24T10:05:00",
    )
    assert events[2] == AllergyRecorded(
        Coded("70618", "Penicillin", "RXNORM"), category="DA", severity="SV", reactions=("Hives", "Wheezing")
    )


def test_transfer_discharge_and_cancel() -> None:
    """A02 moves from PV1-6 to PV1-3; A03 discharges; A11 cancels the admission."""
    pv1 = "PV1|1|I|ICU^1|||WARD^2" + "|" * 13 + "V7"
    a02 = map_message(parse(hl7(_msh("ADT^A02"), "EVN|A02|20261124110000", PID, pv1))).events
    assert a02[1] == Transferred("V7", "WARD/2", "ICU/1", "2026-11-24T11:00:00")
    a03_pv1 = pv1 + "|" * 17 + "01" + "|" * 9 + "20261125090000"
    a03 = map_message(parse(hl7(_msh("ADT^A03"), PID, a03_pv1))).events
    assert a03[1] == Discharged("V7", "01", "2026-11-25T09:00:00")
    a11 = map_message(parse(hl7(_msh("ADT^A11"), PID, pv1))).events
    assert a11[1] == EncounterCancelled("V7", "admission")


def test_merge_names_both_patients() -> None:
    """A40: the PID patient survives, MRG-1 is merged into it; both are touched."""
    raw = hl7(_msh("ADT^A40"), PID, "MRG|OLD9^^^GENHOSP^MR")
    mapped = map_message(parse(raw))
    assert PatientMerged("GENHOSP|MRN42", "GENHOSP|OLD9") in mapped.events
    assert mapped.other_patients == ("GENHOSP|OLD9",)


def test_results_carry_flags_status_and_corrections() -> None:
    """OBX: code, value, units, range, flags, status, time; a C status corrects its key."""
    raw = oru(
        "OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH~A|||F|||20261124100100",
        "OBX|2|NM|2823-3^Potassium^LN|2|4.2|mmol/L|3.5-5.1|N|||C",
        "OBX|3|CWE|600-7^Culture^LN||373^E. coli^SNM||||||F",
        "OBX|4|SN|1234-5^Titer^LN||<^5",
    )
    events = map_message(parse(raw)).events
    assert events[0] == ResultReported(
        result_key="F200|2823-3|",
        code=Coded("2823-3", "Potassium", "LN"),
        value="6.9",
        value_type="NM",
        units="mmol/L",
        reference_range="3.5-5.1",
        abnormal_flags=("HH", "A"),
        status="F",
        effective_at="2026-11-24T10:01:00",
        order_id="F200",
    )
    correction = events[1]
    assert isinstance(correction, ResultReported)
    assert correction.corrects == "F200|2823-3|2"
    assert correction.effective_at == "2026-11-24T10:00:00"  # from OBR-7 when OBX-14 is empty
    assert isinstance(events[2], ResultReported)
    assert events[2].value == "E. coli"
    assert isinstance(events[3], ResultReported)
    assert events[3].value == "<5"


def test_new_order_with_stat_priority_and_cancel() -> None:
    """ORC-1 NW places an order (priority from TQ1-9); CA cancels one."""
    raw = hl7(
        _msh("ORM^O01"),
        PID,
        "ORC|NW|P1|||||||20261124090000",
        "OBR|1|P1||85025^CBC^CPT",
        "TQ1|1||||||||S",
        "ORC|CA|P2||||||||||||||Duplicate",
        "OBR|1|P2||85025^CBC^CPT",
    )
    events = map_message(parse(raw)).events
    assert events == (
        OrderPlaced("P1", Coded("85025", "CBC", "CPT"), "S", "2026-11-24T09:00:00"),
        OrderCancelled("P2", "Duplicate"),
    )


def test_pharmacy_order_dispense_and_administration() -> None:
    """RDE orders, RDS dispenses, RAS/VXU administer; each keeps its order id."""
    rde = hl7(_msh("RDE^O11"), PID, "ORC|NW|RX1", "RXE|^^^20261124^^R|0409^Heparin^NDC|5000||U")
    assert map_message(parse(rde)).events == (
        MedicationOrdered("RX1", Coded("0409", "Heparin", "NDC"), "5000", "U", "R"),
    )
    rds = hl7(_msh("RDS^O13"), PID, "ORC|RE|RX1", "RXD|1|0409^Heparin^NDC|20261124120000|2|vial")
    assert map_message(parse(rds)).events == (
        MedicationDispensed("RX1", Coded("0409", "Heparin", "NDC"), "2", "vial", "2026-11-24T12:00:00"),
    )
    vxu = hl7(_msh("VXU^V04"), PID, "RXA|0|1|20261124130000||08^HepB^CVX|0.5|mL" + "|" * 13 + "CP")
    assert map_message(parse(vxu)).events == (
        MedicationAdministered("", Coded("08", "HepB", "CVX"), "0.5", "mL", "CP", "2026-11-24T13:00:00"),
    )


def test_billing_and_documents() -> None:
    """FT1 posts a charge; TXA records a document (MDM's OBX is its text, not a result)."""
    dft = hl7(_msh("DFT^P03"), PID, "FT1|1|T99||20261124||CG|80048^BMP^CPT|||1|45.00")
    assert map_message(parse(dft)).events == (
        ChargePosted("T99", Coded("80048", "BMP", "CPT"), "CG", "1", "45.00", "2026-11-24"),
    )
    mdm = hl7(_msh("MDM^T02"), PID, "TXA|1|DS|TX|20261124||||||||DOC7|||||AU", "OBX|1|TX|||Discharge summary text")
    assert map_message(parse(mdm)).events == (DocumentRecorded("DOC7", "DS", "AU", "2026-11-24"),)


def test_unmapped_messages_are_kept_as_unrecognized() -> None:
    """A message with no mapped event still yields one event saying so."""
    siu = hl7(_msh("SIU^S12"), "SCH|1", PID)
    assert map_message(parse(siu)).events == (Unrecognized("SIU^S12", "no clinical event mapped; kept whole"),)


@pytest.mark.parametrize("pid", [None, "PID|1||", "PID|1||^^^H^MR"])
def test_missing_patient_identifier_is_refused(pid: str | None) -> None:
    """A result with no patient identifier names PID-3 (or the missing PID)."""
    segments = [_msh("ORU^R01"), "OBR|1|P|F|X", "OBX|1|NM|X||1"]
    if pid is not None:
        segments.insert(1, pid)
    raw = hl7(*segments)
    with pytest.raises(MissingFieldError) as info:
        map_message(parse(raw))
    assert info.value.location.segment == "PID"
    if pid is not None:
        assert info.value.location.field == 3
        assert info.value.location.byte_offset == raw.index(b"PID")


def test_master_files_need_no_patient() -> None:
    """MFN is about no patient: no key, no error."""
    mapped = map_message(parse(hl7(_msh("MFN^M02"), "MFI|PRA")))
    assert mapped.patient is None
