"""Windows of lane groups: a patient's messages never split across concurrent groups."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.core.model import Lane
from engine.core.windows import windows

C, S, B = Lane.CRITICAL, Lane.STANDARD, Lane.BATCH


def test_groups_by_lane_most_urgent_first() -> None:
    [window] = windows([B, S, C, B], [b"1", b"2", b"3", b"1"], 8)
    assert window.groups == ((C, (2,)), (S, (1,)), (B, (0, 3)))
    assert window.one_by_one == ()


def test_a_patient_in_a_second_lane_closes_the_window_and_an_ungroupable_message_stands_alone() -> None:
    assert [w.groups for w in windows([S, S, C], [b"7", b"8", b"7"], 8)] == [((S, (0, 1)),), ((C, (2,)),)]
    found = windows([S, None, S], [b"1", None, b"2"], 8)
    assert [(w.groups, w.one_by_one) for w in found] == [(((S, (0,)),), ()), ((), (1,)), (((S, (2,)),), ())]
    # Messages without a patient go in any group.
    assert windows([S, C], [None, None], 8)[0].groups == ((C, (1,)), (S, (0,)))


def test_windows_cut_the_input_in_order() -> None:
    found = windows([S] * 5, [b"1"] * 5, 2)
    assert [w.groups for w in found] == [((S, (0, 1)),), ((S, (2, 3)),), ((S, (4,)),)]


@given(
    st.lists(st.tuples(st.sampled_from([C, S, B, None]), st.sampled_from([b"1", b"2", b"3", None])), max_size=60),
    st.integers(1, 16),
)
def test_every_message_is_in_exactly_one_place_and_no_patient_spans_two_groups(
    items: list[tuple[Lane | None, bytes | None]], size: int
) -> None:
    lanes, patients = [i[0] for i in items], [i[1] for i in items]
    seen: list[int] = []
    for window in windows(lanes, patients, size):
        seen.extend(window.one_by_one)
        owners: dict[bytes, Lane] = {}
        for lane, indexes in window.groups:
            assert list(indexes) == sorted(indexes)
            for i in indexes:
                seen.append(i)
                assert lanes[i] is lane
                patient = patients[i]
                if patient is not None:
                    assert owners.setdefault(patient, lane) is lane
    assert sorted(seen) == list(range(len(items)))


def test_a_run_of_ungroupable_messages_is_one_window_up_to_its_bound() -> None:
    found = windows([None, None, None, S, None], [None] * 5, 8, alone_max=2)
    assert [(w.groups, w.one_by_one) for w in found] == [
        ((), (0, 1)),
        ((), (2,)),
        (((S, (3,)),), ()),
        ((), (4,)),
    ]
