"""The patient record: the fold, bitemporal queries, corrections, merges, determinism."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.held import HeldFacts
from actors.record import RECENT_MAX, PatientRecord, time_key
from engine.core.decode import Decoder
from engine.core.feedgen import generate_feed
from engine.core.model import (
    Admitted,
    Coded,
    DemographicsUpdated,
    Discharged,
    Event,
    MedicationAdministered,
    MedicationOrdered,
    OrderCancelled,
    OrderPlaced,
    PatientMerged,
    ResultReported,
)

K = Coded("2823-3", "Potassium", "LN")


def _result(
    value: str, *, status: str = "F", flags: tuple[str, ...] = (), effective: str | None = "2026-11-24T08:00:00"
) -> ResultReported:
    return ResultReported(
        result_key="F1|2823-3|",
        code=K,
        value=value,
        units="mmol/L",
        abnormal_flags=flags,
        status=status,
        effective_at=effective,
        corrects="F1|2823-3|" if status == "C" else None,
    )


def _history() -> PatientRecord:
    r = PatientRecord.empty("H|P1")
    r = r.apply(
        1,
        "2026-11-24T07:00:00+00:00",
        "m1",
        [DemographicsUpdated(family="Doe", sex="F"), Admitted("V1", "I", "ICU/1", admitted_at="2026-11-24T06:55:00")],
    )
    r = r.apply(2, "2026-11-24T08:05:00+00:00", "m2", [_result("6.9", flags=("HH",))])
    r = r.apply(3, "2026-11-24T08:10:00+00:00", "m3", [MedicationOrdered("RX1", Coded("kayex"), "15", "g", "S")])
    r = r.apply(4, "2026-11-24T08:40:00+00:00", "m4", [_result("4.2", status="C", effective=None)])
    r = r.apply(5, "2026-11-24T09:00:00+00:00", "m5", [OrderCancelled("RX1", "result corrected")])
    return r.apply(6, "2026-11-25T10:00:00+00:00", "m6", [Discharged("V1", "01", "2026-11-25T09:50:00")])


def test_the_record_now() -> None:
    """Now: the corrected value, both versions kept, the order cancelled, the encounter closed."""
    view = _history().view()
    assert view.demographics is not None
    assert view.demographics.family == "Doe"
    [result] = view.results
    assert (result.current.value, result.corrected, len(result.versions)) == ("4.2", True, 2)
    assert result.effective_at == "2026-11-24T08:00:00"
    [med] = view.medications
    assert med.status == "cancelled"
    [enc] = view.encounters
    assert (enc.status, enc.discharged_at) == ("discharged", "2026-11-25T09:50:00")
    assert view.last_lsn == 6


def test_as_known_at_shows_what_the_system_knew_then() -> None:
    """At 08:20 the system knew the potassium as 6.9 HH: what the clinician acted on."""
    record = _history()
    then = record.view(known_at="2026-11-24T08:20:00Z")
    [result] = then.results
    assert (result.current.value, result.current.abnormal_flags) == ("6.9", ("HH",))
    assert then.medications[0].status == "ordered"
    assert record.view(known_at_lsn=3) == then


def test_as_of_applies_later_corrections_to_the_moment_they_correct() -> None:
    """As of 08:30 clinically, as now known: the corrected 4.2 (it corrects the 08:00 sample)."""
    record = _history()
    [result] = record.view(as_of="2026-11-24T08:30:00Z").results
    assert result.current.value == "4.2"
    assert record.view(as_of="2026-11-24T07:59:00Z").results == ()
    assert record.view(as_of="2026-11-24T07:00:00Z").encounters[0].status == "admitted"


def test_time_keys_compare_across_offsets_and_precisions() -> None:
    """08:00+01:00 is 07:00Z; a date sorts before its times."""
    assert time_key("2026-11-24T08:00:00+01:00") == time_key("2026-11-24T07:00:00Z")
    assert time_key("2026-11-24") < time_key("2026-11-24T00:00")
    assert time_key("2026-11-24T09") > time_key("2026-11-24T08:59:59")


def test_replaying_a_record_twice_changes_nothing() -> None:
    """Applying an LSN at or below the last one is ignored: replay is idempotent."""
    record = _history()
    assert record.apply(3, "t", "m3", [OrderPlaced("X")]) == record


def test_merge_keeps_provenance() -> None:
    """A40: the merged patient's facts join the surviving record, each with its origin."""
    old = PatientRecord.empty("H|OLD").apply(
        1, "2026-11-20T10:00:00Z", "a1", [MedicationAdministered("RX9", Coded("hep"), "5000", "U")]
    )
    old = old.apply(7, "2026-11-24T11:00:00Z", "a7", [PatientMerged("H|P1", "H|OLD")])
    survivor = _history().apply(7, "2026-11-24T11:00:00Z", "a7", [PatientMerged("H|P1", "H|OLD")]).absorb(old)
    assert old.merged_into == "H|P1"
    view = survivor.view()
    assert view.merged_from == ("H|OLD",)
    assert {f.source_patient for f in survivor.facts} == {"H|P1", "H|OLD"}
    assert [f.lsn for f in survivor.facts] == sorted(f.lsn for f in survivor.facts)
    assert any(m.order_id == "RX9" for m in view.medications)
    assert survivor.absorb(old) == survivor  # absorbing twice changes nothing


# -- determinism over generated histories ------------------------------------------


def _pool() -> list[tuple[Event, ...]]:
    decoder = Decoder()
    envs = [decoder.hl7(raw, received_at="t", source="s") for raw in generate_feed(300, seed=8, patients=1)]
    return [e.events for e in envs]


POOL = _pool()
_CODEC = msgspec.msgpack


@st.composite
def _histories(draw: st.DrawFn) -> list[tuple[int, str, str, tuple[Event, ...]]]:
    count = draw(st.integers(1, 40))
    picks = draw(st.lists(st.integers(0, len(POOL) - 1), min_size=count, max_size=count))
    gaps = draw(st.lists(st.integers(1, 5), min_size=count, max_size=count))
    history, lsn = [], 0
    for i, (pick, gap) in enumerate(zip(picks, gaps, strict=True)):
        lsn += gap
        history.append((lsn, f"2026-11-24T{8 + i // 60:02d}:{i % 60:02d}:00Z", f"m{lsn}", POOL[pick]))
    return history


def _fold(history: list[tuple[int, str, str, tuple[Event, ...]]], start: PatientRecord | None = None) -> PatientRecord:
    record = start if start is not None else PatientRecord.empty("GENHOSP|MRN000000")
    for lsn, at, mid, events in history:
        record = record.apply(lsn, at, mid, events)
    return record


@settings(max_examples=150, deadline=None)
@given(_histories(), st.data())
def test_snapshot_plus_tail_equals_full_replay(
    history: list[tuple[int, str, str, tuple[Event, ...]]], data: st.DataObject
) -> None:
    """Invariant 3: a snapshot (encoded, decoded) plus the tail equals a full replay, view included."""
    cut = data.draw(st.integers(0, len(history)))
    full = _fold(history)
    snapshot = _CODEC.decode(_CODEC.encode(_fold(history[:cut])), type=PatientRecord)
    resumed = _fold(history[cut:], snapshot)
    assert full == resumed
    assert full.view() == resumed.view()
    # Replaying the whole log over the snapshot (a redelivered tail) changes nothing.
    assert _fold(history, resumed) == full


@settings(max_examples=150, deadline=None)
@given(_histories(), st.data())
def test_extend_folds_a_history_exactly_as_apply_does_one_record_at_a_time(
    history: list[tuple[int, str, str, tuple[Event, ...]]], data: st.DataObject
) -> None:
    """The linear fold used for activations and merges gives the very record the step-by-step fold gives."""
    cut = data.draw(st.integers(0, len(history)))
    start = _fold(history[:cut])
    assert start.extend(history[cut:]) == _fold(history[cut:], start)
    assert start.extend(history) == _fold(history, start)  # what is folded already is ignored, as by apply


@settings(max_examples=100, deadline=None)
@given(_histories(), st.data())
def test_known_at_equals_the_record_built_from_that_prefix(
    history: list[tuple[int, str, str, tuple[Event, ...]]], data: st.DataObject
) -> None:
    """As known at LSN n is exactly the record folded from the log up to n."""
    cut = data.draw(st.integers(0, len(history)))
    known_lsn = history[cut - 1][0] if cut else 0
    assert _fold(history).view(known_at_lsn=known_lsn) == _fold(history[:cut]).view()


@pytest.mark.parametrize("seed", [1, 2])
def test_the_fold_is_deterministic(seed: int) -> None:
    """The same log gives the same record, byte for byte when encoded."""
    decoder = Decoder()
    envs = [decoder.hl7(raw, received_at="t", source="s") for raw in generate_feed(200, seed=seed, patients=1)]
    history = [(i + 1, f"2026-11-24T08:00:{i % 60:02d}Z", e.message_id, e.events) for i, e in enumerate(envs)]
    assert _CODEC.encode(_fold(history)) == _CODEC.encode(_fold(history))


@settings(max_examples=100, deadline=None)
@given(_histories(), st.data())
def test_until_equals_the_record_folded_through_that_record(
    history: list[tuple[int, str, str, tuple[Event, ...]]], data: st.DataObject
) -> None:
    """A record cut back to LSN n (a merge replayed once the merged patient moved on) is the fold up to n."""
    cut = data.draw(st.integers(0, len(history)))
    through = history[cut - 1][0] if cut else 0
    assert _fold(history).until(through) == _fold(history[:cut])


def test_until_leaves_out_a_patient_merged_in_later_and_what_it_had_absorbed() -> None:
    """C merged into B (LSN 4), B into A (LSN 9): A through LSN 6 has neither; through 9, both."""
    rx = [MedicationAdministered("RX9", Coded("hep"), "5000", "U")]
    c = PatientRecord.empty("H|C").apply(2, "2026-11-20T10:00:00Z", "c2", rx)
    merge_c = [PatientMerged("H|B", "H|C")]
    b = PatientRecord.empty("H|B").apply(3, "2026-11-21T10:00:00Z", "b3", [OrderPlaced("B1")])
    b = b.apply(4, "2026-11-21T11:00:00Z", "m4", merge_c).absorb(c.apply(4, "2026-11-21T11:00:00Z", "m4", merge_c))
    a = _history()  # LSNs 1..6 of its own
    merge_b = [PatientMerged("H|P1", "H|B")]
    merged_b = b.apply(9, "2026-11-24T11:00:00Z", "m9", merge_b)
    a_now = a.apply(9, "2026-11-24T11:00:00Z", "m9", merge_b).absorb(merged_b)
    assert a_now.merged_from == ("H|B", "H|C")
    assert a_now.until(6) == msgspec.structs.replace(a, last_lsn=6)
    assert a_now.until(9) == a_now
    assert {f.source_patient for f in a_now.until(6).facts} == {"H|P1"}


# -- the two parts of a record's facts ----------------------------------------------


def test_a_long_history_is_kept_in_two_parts_and_read_whole() -> None:
    """`apply` copies only the recent part; the facts read whole are every fact in log order, however split."""
    events = POOL[0]
    stepped = PatientRecord.empty("GENHOSP|MRN000000")
    for lsn in range(1, 3 * RECENT_MAX):
        stepped = stepped.apply(lsn, "2026-11-24T08:00:00Z", f"m{lsn}", events)
        assert len(stepped.recent) < RECENT_MAX
    assert stepped.sealed  # sealed along the way
    assert [f.lsn for f in stepped.facts] == sorted(f.lsn for f in stepped.facts)
    assert list(stepped.iter_facts()) == list(stepped.facts)
    assert stepped.fact_count == len(stepped.facts)
    whole = PatientRecord.empty("GENHOSP|MRN000000").extend(
        (lsn, "2026-11-24T08:00:00Z", f"m{lsn}", events) for lsn in range(1, 3 * RECENT_MAX)
    )
    assert whole.recent == ()
    assert whole == stepped  # equal: the same facts, split differently
    assert whole.view() == stepped.view()


def test_a_snapshot_holds_every_fact_where_snapshots_always_had_them() -> None:
    """An older Vigil reading a new snapshot (or this one reading an old snapshot) finds every fact in `facts`."""
    record = _fold([(lsn, "2026-11-24T08:00:00Z", f"m{lsn}", POOL[lsn % len(POOL)]) for lsn in range(1, 40)])
    assert record.recent  # the last facts are recent here
    encoded = _CODEC.decode(_CODEC.encode(record.for_snapshot()))
    assert len(encoded["facts"]) == record.fact_count
    assert encoded["recent"] == []
    old = dict(encoded)
    del old["recent"]  # as a snapshot written before the split reads
    assert _CODEC.decode(_CODEC.encode(old), type=PatientRecord) == record


# -- held facts: a long record's oldest facts kept as bytes until read ---------------------


def _held(record: PatientRecord) -> PatientRecord:
    """The record as a long snapshot reads back: every fact held, none decoded."""
    return PatientRecord(
        record.patient,
        last_lsn=record.last_lsn,
        merged_from=record.merged_from,
        merged_into=record.merged_into,
        held=HeldFacts.of_array(_CODEC.encode(record.facts)),
    )


@settings(max_examples=150, deadline=None)
@given(_histories(), st.data())
def test_a_record_with_held_facts_is_the_record_it_holds(
    history: list[tuple[int, str, str, tuple[Event, ...]]], data: st.DataObject
) -> None:
    """Held or decoded, the same record: its fold going on (corrections reach held originals), views, cuts."""
    cut = data.draw(st.integers(0, len(history)))
    full = _fold(history)
    held = _held(_fold(history[:cut]))
    assert held.sealed == ()
    assert held == _fold(history[:cut])
    resumed = _fold(history[cut:], held)
    assert resumed == full
    assert resumed.held is not None  # applying records does not decode what is held
    assert held.extend(history[cut:]) == full
    assert held.extend(history[cut:]).held is not None
    assert resumed.view() == full.view()
    assert resumed.view(as_of="2026-11-24T08:20:00Z") == full.view(as_of="2026-11-24T08:20:00Z")
    through = history[cut - 1][0] if cut else 0
    assert _held(full).until(through) == full.until(through)
    assert resumed.unheld() == full
    assert resumed.unheld().held is None
    assert resumed.for_snapshot().held is None
    assert resumed.fact_count == full.fact_count


def test_a_merge_into_or_of_a_record_with_held_facts_is_the_merge_of_the_records() -> None:
    a = _history()
    merge = [PatientMerged("H|P1", "H|B")]
    b = PatientRecord.empty("H|B").apply(3, "2026-11-21T10:00:00Z", "b3", [OrderPlaced("B1")])
    b = b.apply(9, "2026-11-24T11:00:00Z", "m9", merge)
    expected = a.apply(9, "2026-11-24T11:00:00Z", "m9", merge).absorb(b)
    assert _held(a).apply(9, "2026-11-24T11:00:00Z", "m9", merge).absorb(_held(b)) == expected
    assert _held(a).apply(9, "2026-11-24T11:00:00Z", "m9", merge).absorb(_held(b)).held is None


def test_held_bytes_that_are_not_facts_are_refused_when_read() -> None:
    record = PatientRecord("H|P1", last_lsn=3, held=HeldFacts(2, b"\x01\x02"))
    assert record.fact_count == 2
    with pytest.raises(msgspec.DecodeError):
        record.unheld()
    with pytest.raises(msgspec.DecodeError):
        HeldFacts.of_array(b"\x01")  # not an array
