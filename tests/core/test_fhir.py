"""FHIR R4: decoding resources, Bundles and NDJSON; envelopes, patient keys, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.core.decode import Decoder, decode_input
from engine.core.errors import JSONError, ShapeError
from engine.core.fhir import DecodedBundle, RawResource, decode_document
from engine.core.fhir.resources import Encounter, Observation
from engine.core.model import Admitted, Lane, OrderPlaced, ResultReported

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "identifier": [
        {"system": "urn:ssn", "value": "999"},
        {"system": "urn:oid:1.2.3", "value": "MRN7", "type": {"coding": [{"code": "MR"}]}},
    ],
    "name": [{"family": "Doe", "given": ["Jane"]}],
    "gender": "female",
    "birthDate": "1970-01-01",
}


def _obs(**extra: Any) -> dict[str, Any]:
    obs = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3", "display": "Potassium"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 6.90, "unit": "mmol/L"},
    }
    obs.update(extra)
    return obs


def _bundle(kind: str, *resources: dict[str, Any], bundle_id: str | None = "b1") -> bytes:
    doc: dict[str, Any] = {"resourceType": "Bundle", "type": kind, "entry": []}
    if bundle_id:
        doc["id"] = bundle_id
    for r in resources:
        doc["entry"].append({"fullUrl": f"urn:uuid:{r['id']}", "resource": r})
    return json.dumps(doc).encode()


def _decode(raw: bytes) -> list[Any]:
    return Decoder().fhir(raw, received_at="2026-11-24T10:00:00Z", source="test")


def test_single_resource_decodes_to_its_struct() -> None:
    """A known resource type decodes into its Struct, quantities as exact decimals."""
    doc = decode_document(b'{"resourceType":"Observation","status":"final","valueQuantity":{"value":6.90}}')
    assert isinstance(doc, Observation)
    assert doc.value_quantity is not None
    assert str(doc.value_quantity.value) == "6.90"


def test_unknown_resource_type_is_kept_raw() -> None:
    """A resource Vigil does not know is kept with its JSON untouched."""
    raw = b'{"resourceType":"Basic","id":"x","code":{"text":"anything"}}'
    doc = decode_document(raw)
    assert isinstance(doc, RawResource)
    assert (doc.resource_type, doc.id, doc.json) == ("Basic", "x", raw)


@pytest.mark.parametrize(
    ("raw", "error", "where"),
    [
        (b'{"resourceType": "Patient", ', JSONError, None),
        (b'{"resourceType": "Patient"} trailing', JSONError, 28),
        (b"[1, 2]", ShapeError, "$"),
        (b'{"PatientId": 1}', ShapeError, "$"),
        (b'{"resourceType": "Observation", "status": 5}', ShapeError, "$.status"),
        (b'{"resourceType": "Encounter", "class": "EMER"}', ShapeError, "$.class"),
    ],
)
def test_bad_json_and_bad_shapes_are_typed_errors(raw: bytes, error: type[Exception], where: object) -> None:
    """Invalid JSON names its byte offset; a wrong shape names its JSON path."""
    with pytest.raises(error) as info:
        decode_document(raw)
    loc = info.value.location  # type: ignore[attr-defined]
    if error is JSONError and isinstance(where, int):
        # msgspec counts to where it stopped reading: at or just past the bad byte.
        assert where <= loc.byte_offset <= where + 1
    if error is ShapeError:
        assert where == loc.path


def test_bad_entry_names_its_bundle_path() -> None:
    """A malformed entry names `$.entry[i].resource...`."""
    raw = _bundle("collection", PATIENT, _obs(status=7))
    with pytest.raises(ShapeError) as info:
        decode_document(raw)
    assert info.value.location.path == "$.entry[1].resource.status"


@pytest.mark.parametrize("kind", ["batch", "transaction", "collection"])
def test_an_entry_without_a_resource_refuses_the_bundle_by_path(kind: str) -> None:
    """Never dropped in silence: the Bundle is refused, naming the entry (and an inlined resource's type)."""
    doc = json.loads(_bundle(kind, _obs()))
    doc["entry"].append({"request": {"method": "DELETE", "url": "Observation/o9"}})
    doc["entry"].append({"resourceType": "Encounter", "id": "e1"})
    with pytest.raises(ShapeError, match="entry 1 has no resource") as info:
        decode_document(json.dumps(doc).encode())
    assert info.value.location.path == "$.entry[1]"
    del doc["entry"][1]
    with pytest.raises(ShapeError, match="resourceType Encounter itself"):
        decode_document(json.dumps(doc).encode())


def test_transaction_bundle_is_one_message_with_the_most_urgent_lane() -> None:
    """A transaction is one message; its lane is its most urgent entry's."""
    critical = _obs(id="o2", interpretation=[{"coding": [{"code": "HH"}]}])
    [env] = _decode(_bundle("transaction", PATIENT, _obs(), critical))
    assert env.lane is Lane.CRITICAL
    assert env.message_id == "fhir:Bundle/b1"
    assert env.patient == "urn:oid:1.2.3|MRN7"  # resolved through Patient/p1 in the Bundle
    assert [type(e).__name__ for e in env.events] == ["DemographicsUpdated", "ResultReported", "ResultReported"]


def test_batch_bundle_entries_are_classified_on_their_own() -> None:
    """A `batch` Bundle is not the batch lane: each entry is its own message."""
    claim = {"resourceType": "Claim", "id": "c1", "patient": {"reference": "Patient/p1"}, "total": {"value": 10}}
    envs = _decode(_bundle("batch", _obs(interpretation=[{"coding": [{"code": "LL"}]}]), claim))
    assert [e.lane for e in envs] == [Lane.CRITICAL, Lane.BATCH]
    assert [e.message_id for e in envs] == ["fhir:Bundle/b1#0", "fhir:Bundle/b1#1"]
    assert envs[0].raw.startswith(b'{"resourceType": "Observation"')


def test_message_bundle_id_comes_from_the_message_header() -> None:
    """A message Bundle's id is its MessageHeader's; the type names the event."""
    header = {"resourceType": "MessageHeader", "id": "mh9", "eventCoding": {"code": "admit-notification"}}
    encounter = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "in-progress",
        "class": {"code": "EMER"},
        "subject": {"reference": "urn:uuid:p1"},
        "period": {"start": "2026-11-24T09:00:00Z"},
    }
    [env] = _decode(_bundle("message", header, PATIENT, encounter))
    assert env.message_id == "fhir:MessageHeader/mh9"
    assert env.message_type == "Bundle:message:admit-notification"
    assert env.lane is Lane.CRITICAL
    assert Admitted("Encounter/e1", "EMER", "", "", "", "2026-11-24T09:00:00Z") in env.events


def test_id_without_header_is_a_hash_of_canonical_bytes() -> None:
    """Same content, any key order or spacing: the same message id (invariant 4)."""
    a = json.dumps(_obs()).encode()
    b = json.dumps(dict(reversed(list(_obs().items()))), indent=2).encode()
    [ea], [eb] = _decode(a), _decode(b)
    assert ea.message_id == eb.message_id
    assert ea.message_id.startswith("fhir:sha256:")


def test_clinical_resource_without_patient_is_refused() -> None:
    """An Observation that names no patient cannot be routed: ShapeError at $.subject."""
    obs = _obs()
    del obs["subject"]
    with pytest.raises(ShapeError) as info:
        _decode(json.dumps(obs).encode())
    assert info.value.location.path == "$.subject"


def test_service_request_and_correction() -> None:
    """A STAT ServiceRequest is critical; a corrected Observation corrects its own key."""
    sr = {
        "resourceType": "ServiceRequest",
        "id": "s1",
        "status": "active",
        "priority": "stat",
        "subject": {"reference": "Patient/p1"},
    }
    [env] = _decode(json.dumps(sr).encode())
    assert env.lane is Lane.CRITICAL
    assert isinstance(env.events[0], OrderPlaced)
    [corr] = _decode(json.dumps(_obs(status="corrected")).encode())
    assert corr.lane is Lane.CRITICAL
    result = corr.events[0]
    assert isinstance(result, ResultReported)
    assert result.corrects == "Observation/o1"


def test_ndjson_stream_gives_one_message_per_line_and_keeps_going() -> None:
    """NDJSON: each line is a message; a bad line is an error at its offset, the rest decode."""
    lines = [json.dumps(_obs(id=f"o{i}")) for i in range(3)]
    lines[1] = '{"resourceType": "Observation", "status": '
    raw = ("\n".join(lines) + "\n").encode()
    out = decode_input(raw, Decoder(), received_at="t", source="s")
    assert [d.error is None for d in out] == [True, False, True]
    bad = out[1].error
    assert bad is not None
    assert bad.location.message_index == 1
    assert bad.location.byte_offset is not None
    assert bad.location.byte_offset >= len(lines[0]) + 1


def test_encounter_class_element_is_read() -> None:
    """`class` (a Python keyword) is decoded from the JSON element of that name."""
    doc = decode_document(b'{"resourceType":"Encounter","class":{"code":"EMER"}}')
    assert isinstance(doc, Encounter)
    assert doc.class_ is not None
    assert doc.class_.code == "EMER"


def test_bundle_keeps_each_entry_json() -> None:
    """Every decoded entry carries its exact JSON."""
    doc = decode_document(_bundle("collection", PATIENT))
    assert isinstance(doc, DecodedBundle)
    assert json.loads(doc.entries[0].json) == PATIENT
