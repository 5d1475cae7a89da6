"""Kept Observations: a read through the kept encodings is exactly a read made afresh, at any step and any moment."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import PatientRecord, RecordView
from engine.core.decode import Decoder
from engine.core.feedgen import generate_feed
from engine.core.model import Event, ResultReported
from engine.web import READABLE_TYPES, resources_of
from engine.web.encoded import EncodedResources
from engine.web.fhir_query import facets_of

History = list[tuple[int, str, str, tuple[Event, ...]]]


def _pool() -> list[tuple[Event, ...]]:
    """A patient's messages, and a correction of each result message's results (status C, another value)."""
    decoder = Decoder()
    envs = [decoder.hl7(raw, received_at="t", source="s") for raw in generate_feed(300, seed=21, patients=1)]
    pool = [e.events for e in envs]
    for events in list(pool):
        results = [e for e in events if isinstance(e, ResultReported)]
        if results:
            pool.append(tuple(_corrected(r) for r in results))
    return pool


def _corrected(result: ResultReported) -> ResultReported:
    return msgspec.structs.replace(result, status="C", value=result.value + "1", corrects=result.result_key)


POOL = _pool()


@st.composite
def _histories(draw: st.DrawFn) -> History:
    picks = draw(st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=40))
    return [(i + 1, f"2026-11-24T08:{i:02d}:00Z", f"m{i + 1}", POOL[pick]) for i, pick in enumerate(picks)]


def _same_as_made_afresh(kept: EncodedResources, view: RecordView) -> None:
    for rtype in READABLE_TYPES:
        made = resources_of(view, rtype)
        read = kept.of(view, rtype)
        assert [msgspec.json.decode(e.raw) for e in read] == made
        assert [(e.rtype, e.rid, e.facets) for e in read] == [(rtype, r["id"], facets_of(rtype, r)) for r in made]


def test_the_pool_has_corrected_results() -> None:
    """The histories below exercise versions: corrections of results sent before."""
    assert any(isinstance(e, ResultReported) and e.status == "C" for events in POOL for e in events)


@settings(max_examples=80, deadline=None)
@given(_histories(), st.integers(0, 30), st.data())
def test_reads_through_kept_observations_equal_reads_made_afresh(
    history: History, kept_max: int, data: st.DataObject
) -> None:
    """After every record, as it stands and as known at an earlier record, with room for few or many."""
    kept = EncodedResources(kept_max)
    record = PatientRecord.empty("GENHOSP|MRN000000")
    for lsn, at, mid, events in history:
        record = record.apply(lsn, at, mid, events)
        _same_as_made_afresh(kept, record.view())
        earlier = data.draw(st.integers(0, lsn), label="known at")
        _same_as_made_afresh(kept, record.view(known_at_lsn=earlier))
        assert len(kept) <= kept_max


def test_a_result_unchanged_since_the_last_read_is_not_made_again() -> None:
    """Only what the record gained is made; a corrected result gets a new Observation (its versionId changes)."""
    decoder = Decoder()
    envs = [decoder.hl7(raw, received_at="t", source="s") for raw in generate_feed(60, seed=3, patients=1)]
    batches = [env.events for env in envs]
    batches.insert(30, tuple(_corrected(e) for events in batches[:30] for e in events if isinstance(e, ResultReported)))
    record = PatientRecord.empty("GENHOSP|MRN000000")
    kept = EncodedResources(10_000)
    before: dict[str, tuple[int, msgspec.Raw]] = {}
    made_again = 0
    for lsn, events in enumerate(batches, 1):
        record = record.apply(lsn, f"2026-11-24T08:{lsn:02d}:00Z", f"m{lsn}", events)
        view = record.view()
        for result, e in zip(view.results, kept.of(view, "Observation"), strict=True):
            if result.result_key in before and before[result.result_key][0] == len(result.versions):
                assert e.raw is before[result.result_key][1]  # the very bytes kept at the last read
            elif result.result_key in before:
                assert e.raw is not before[result.result_key][1]
                assert msgspec.json.decode(e.raw)["meta"]["versionId"] == str(len(result.versions))
                made_again += 1
            before[result.result_key] = (len(result.versions), e.raw)
    assert made_again > 0  # the corrections were read
    assert len(kept) >= len(view.results)


def test_the_least_recently_read_are_dropped_first() -> None:
    decoder = Decoder()
    envs = [decoder.hl7(raw, received_at="t", source="s") for raw in generate_feed(40, seed=5, patients=2)]
    records: dict[str, PatientRecord] = {}
    for lsn, env in enumerate(envs, 1):
        if env.patient is not None:
            record = records.get(env.patient) or PatientRecord.empty(env.patient)
            records[env.patient] = record.apply(lsn, "2026-11-24T08:00:00Z", env.message_id, env.events)
    first, second = (r.view() for r in records.values())
    assert first.results
    assert second.results
    kept = EncodedResources(len(first.results))
    a = kept.of(first, "Observation")
    kept.of(second, "Observation")  # pushes the first record's out
    assert all(x.raw is not y.raw for x, y in zip(a, kept.of(first, "Observation"), strict=True))
    assert len(kept) == len(first.results)
