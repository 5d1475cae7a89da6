"""A record as FHIR R4 resources: ids that read back, and every resource of the corpus valid to a validator nobody here wrote."""

from __future__ import annotations

from collections import defaultdict

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given
from hypothesis import strategies as st

from actors import PatientRecord
from engine.core.decode import Decoder, decode_input
from engine.core.model import Envelope
from engine.infra.config import load_config
from engine.web import READABLE_TYPES, key_of_patient_id, patient_id, resources_of
from lanes import Classifier
from tests.conftest import corpus_files
from tests.harness.helpers import MSH_ADT, PID, hl7, oru

HL7_FILES = corpus_files("hl7v2")


@given(st.text(min_size=1, max_size=40))
def test_a_patient_id_reads_back_as_its_key(key: str) -> None:
    rid = patient_id(key)
    assert all(c.isascii() and (c.isalnum() or c in ".-") for c in rid)
    assert key_of_patient_id(rid) == key


@pytest.mark.parametrize("text", ["", "a b", "x-zz", "x-4", "-", "a|b", "é", "x-FF"])
def test_text_that_is_not_a_patient_id_names_no_patient(text: str) -> None:
    assert key_of_patient_id(text) is None


def test_a_usual_key_stays_readable() -> None:
    assert patient_id("GENHOSP|MRN42") == "GENHOSP-7CMRN42"


def _views(raws: list[bytes]) -> dict[str, PatientRecord]:
    config = load_config()
    decoder = Decoder(Classifier(config.lanes.rules), config.ingest.charsets())
    envelopes: list[Envelope] = []
    for raw in raws:
        decoded = decode_input(raw, decoder, received_at="2026-12-06T08:00:00+00:00", source="test")
        envelopes += [d.envelope for d in decoded if d.envelope is not None]
    records: dict[str, PatientRecord] = {}
    for lsn, env in enumerate(envelopes, 1):
        if env.patient is None:
            continue
        record = records.get(env.patient) or PatientRecord.empty(env.patient)
        records[env.patient] = record.apply(lsn, env.received_at, env.message_id, env.events)
    return dict(records)


def _check(resource: dict[str, object]) -> None:
    model = get_fhir_model_class(str(resource["resourceType"]))
    model.model_validate(resource)  # raises with the path of what a FHIR server would refuse


def test_a_critical_result_as_an_observation() -> None:
    raw = oru("OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F|||20261124095500")
    admit = hl7(MSH_ADT, PID, "PV1|1|I|W1^101^A||||||||||||||||V100|||||||||||||||||||||||||20261124080000")
    (record,) = _views([admit, raw]).values()
    (obs,) = resources_of(record.view(), "Observation")
    _check(obs)
    assert obs["valueQuantity"] == {"value": 6.9, "unit": "mmol/L"}
    assert obs["status"] == "final"
    assert obs["code"] == {
        "coding": [{"system": "http://loinc.org", "code": "2823-3", "display": "Potassium"}],
        "text": "Potassium",
    }
    assert obs["subject"] == {"reference": f"Patient/{patient_id(record.patient)}"}
    assert obs["effectiveDateTime"] == "2026-11-24T09:55:00+00:00"
    (patient,) = resources_of(record.view(), "Patient")
    _check(patient)
    assert patient["name"] == [{"family": "Doe", "given": ["Jane", "Q"]}]
    assert patient["gender"] == "female"
    assert patient["birthDate"] == "1970-01-01"
    (visit,) = resources_of(record.view(), "Encounter")
    _check(visit)
    assert (visit["status"], visit["class"]["code"], visit["period"]) == (  # type: ignore[index]
        "in-progress",
        "IMP",
        {"start": "2026-11-24T08:00:00+00:00"},
    )


@pytest.mark.corpus
@pytest.mark.skipif(not HL7_FILES, reason="public sample corpus not found (../shared/corpus/hl7v2)")
def test_every_resource_made_from_the_corpus_is_valid_fhir_r4() -> None:
    records = _views([p.read_bytes() for p in HL7_FILES])
    assert len(records) > 20
    made: dict[str, int] = defaultdict(int)
    for record in records.values():
        view = record.view()
        for rtype in READABLE_TYPES:
            for resource in resources_of(view, rtype):
                assert resource["resourceType"] == rtype
                _check(resource)
                made[rtype] += 1
    # The corpus has patients, results, visits, medications and allergies: each type was made and checked.
    assert set(made) == set(READABLE_TYPES), made
