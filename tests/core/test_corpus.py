"""Conformance over the public sample corpus (../shared/corpus, MIT, microsoft/FHIR-Converter).

Skipped, with the reason, where the corpus folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.decode import Decoder, decode_input
from engine.core.errors import ShapeError
from engine.core.hl7 import parse
from engine.core.mllp import frame
from engine.core.model import Lane, Unrecognized
from tests.conftest import CORPUS, corpus_files

HL7_FILES = corpus_files("hl7v2")
FHIR_FILES = corpus_files("fhir")
DECODER = Decoder()
_ABSENT = f"public sample corpus not found at {CORPUS}"

# ExamplePatient.json is the FHIR-Converter's *input* template data, not a
# FHIR resource (it has no resourceType): Vigil must refuse it clearly.
NOT_FHIR = {"ExamplePatient.json"}
# ObservationBundle.json's entry 1 holds an Encounter's fields in the entry
# itself, not under `resource`: once dropped in silence, now refused by path.
MALFORMED = {"ObservationBundle.json": "$.entry[1]"}


@pytest.mark.corpus
@pytest.mark.skipif(not HL7_FILES, reason=_ABSENT)
@pytest.mark.parametrize("path", HL7_FILES, ids=lambda p: p.name)
def test_hl7_round_trip_is_exact(path: Path) -> None:
    """Every sample message serializes back to its exact bytes (BOM, LF ends, all)."""
    raw = path.read_bytes()
    assert raw == parse(raw).to_bytes()


@pytest.mark.corpus
@pytest.mark.skipif(not HL7_FILES, reason=_ABSENT)
@pytest.mark.parametrize("path", HL7_FILES, ids=lambda p: p.name)
def test_hl7_decodes_to_an_envelope(path: Path) -> None:
    """Every sample message decodes: an id, a lane with a reason, events, the raw bytes."""
    raw = path.read_bytes()
    [decoded] = decode_input(raw, DECODER, received_at="t", source=path.name)
    assert decoded.error is None, decoded.error
    env = decoded.envelope
    assert env is not None
    assert env.message_id.startswith("hl7:")
    assert env.lane in Lane
    assert env.lane_reason
    assert env.events
    assert env.raw == raw
    # Every message with a PID has a patient key.
    if parse(raw).segment("PID") is not None:
        assert env.patient


@pytest.mark.corpus
@pytest.mark.skipif(not HL7_FILES, reason=_ABSENT)
def test_hl7_corpus_through_mllp_gives_the_same_envelopes() -> None:
    """All samples framed as one MLLP stream decode exactly as they do one by one."""
    raws = [p.read_bytes() for p in HL7_FILES]
    stream = b"".join(frame(r) for r in raws)
    framed = decode_input(stream, DECODER, received_at="t", source="s")
    alone = [decode_input(r, DECODER, received_at="t", source="s")[0] for r in raws]
    assert [d.envelope for d in alone] == [d.envelope for d in framed]


@pytest.mark.corpus
@pytest.mark.skipif(not HL7_FILES, reason=_ABSENT)
def test_hl7_corpus_lanes_and_events() -> None:
    """The corpus exercises every lane and maps most messages to clinical events."""
    envs = [decode_input(p.read_bytes(), DECODER, received_at="t", source="s")[0].envelope for p in HL7_FILES]
    lanes = {e.lane for e in envs if e is not None}
    assert lanes == set(Lane)
    unmapped = [e for e in envs if e is not None and all(isinstance(x, Unrecognized) for x in e.events)]
    assert len(unmapped) < len(envs) // 5


@pytest.mark.corpus
@pytest.mark.skipif(not FHIR_FILES, reason=_ABSENT)
@pytest.mark.parametrize("path", FHIR_FILES, ids=lambda p: p.name)
def test_fhir_samples(path: Path) -> None:
    """FHIR samples decode; the one that is not FHIR, and the malformed one, are refused with a ShapeError at a path."""
    decoded = decode_input(path.read_bytes(), DECODER, received_at="t", source=path.name)
    if path.name in NOT_FHIR or path.name in MALFORMED:
        [bad] = decoded
        assert isinstance(bad.error, ShapeError)
        assert bad.error.location.path == MALFORMED.get(path.name, "$")
        return
    assert decoded
    for d in decoded:
        assert d.error is None, d.error
        assert d.envelope is not None
        assert d.envelope.events
