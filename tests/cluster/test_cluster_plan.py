"""The cluster's pure parts: partitions of patients, the fair-share plan, lease freshness on one node's clock."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cluster import Freshness, Held, LeaseValue, MemberInfo, fair_shares, partition_of, plan
from engine.cluster.leases import decode_lease, decode_member

NODES = st.lists(st.sampled_from([f"node{i}" for i in range(7)]), min_size=1, max_size=7, unique=True)


def test_partition_of_is_stable_and_even() -> None:
    """The same key gives the same partition (fixed values: every node and every Python agree); keys spread evenly."""
    assert partition_of("GENHOSP|MRN000042", 16) == partition_of("GENHOSP|MRN000042", 16)
    # Pinned: a change of hash would move every patient of a running cluster.
    assert [partition_of(f"GENHOSP|MRN{n:06d}", 16) for n in range(5)] == [13, 8, 0, 6, 2]
    counts = Counter(partition_of(f"GENHOSP|MRN{n:06d}", 16) for n in range(16_000))
    assert len(counts) == 16
    assert max(counts.values()) < 1.1 * 1000  # within 10% of the mean


@given(partitions=st.integers(1, 64), members=NODES)
def test_shares_are_equal_to_within_one(partitions: int, members: list[str]) -> None:
    shares = fair_shares(partitions, members)
    assert partitions == sum(shares.values())
    assert max(shares.values()) - min(shares.values()) <= 1


@settings(max_examples=300)
@given(
    partitions=st.integers(1, 48),
    members=NODES,
    owners=st.dictionaries(st.integers(0, 47), st.one_of(st.none(), st.sampled_from([f"node{i}" for i in range(9)]))),
)
def test_plan_gives_every_partition_one_live_owner_and_keeps_what_it_can(
    partitions: int, members: list[str], owners: dict[int, str | None]
) -> None:
    """Every partition planned to a member; counts as fair shares; an owner within its share keeps all it has."""
    planned = plan(partitions, members, owners)
    assert set(range(partitions)) == set(planned)
    assert set(planned.values()) <= set(members)
    assert fair_shares(partitions, members) == {m: sum(1 for o in planned.values() if o == m) for m in members}
    shares = fair_shares(partitions, members)
    for member in members:
        held = [p for p in range(partitions) if owners.get(p) == member]
        if len(held) <= shares[member]:
            assert all(planned[p] == member for p in held)


@given(partitions=st.integers(1, 48), members=NODES)
def test_plan_is_a_fixed_point(partitions: int, members: list[str]) -> None:
    """Once the plan is carried out, it asks for no more moves (no flapping)."""
    first = plan(partitions, members, {})
    assert first == plan(partitions, members, dict(first))


def test_a_dead_members_partitions_go_to_the_living_and_nothing_else_moves() -> None:
    before = plan(16, ["a", "b", "c"], {})
    after = plan(16, ["a", "b"], dict(before))
    moved = {p for p in range(16) if before[p] != after[p]}
    assert {p for p in range(16) if before[p] == "c"} == moved
    assert plan(16, [], {}) == {}


def test_freshness_is_judged_on_the_observers_clock() -> None:
    """A revision that stands still for the TTL is stale; a new revision restarts the clock."""
    seen = Freshness(2.0)
    assert not seen.fresh("p1", 0.0)
    seen.observe("p1", 5, now=10.0)
    assert seen.fresh("p1", 11.99)
    seen.observe("p1", 5, now=11.5)  # the same revision read again: the clock does not restart
    assert not seen.fresh("p1", 12.0)
    seen.observe("p1", 6, now=12.5)
    assert seen.fresh("p1", 14.4)
    assert seen.age_s("p1", 14.0) == 1.5
    seen.forget("p1")
    assert seen.revision("p1") is None


def test_the_holder_stops_before_any_observer_may_take_over() -> None:
    """The holder's validity runs from the *start* of its renewal; an observer's from when it saw the result."""
    ttl = 2.0
    renewal_began, revision_written, observer_saw = 100.0, 100.004, 100.3
    held = Held(3, epoch=4, revision=9, valid_until=renewal_began + ttl)
    observer = Freshness(ttl)
    observer.observe("p3", 9, observer_saw)
    assert revision_written < observer_saw
    first_stale = observer_saw + ttl
    assert not held.valid(first_stale - 0.001)  # the holder already stopped
    assert observer.fresh("p3", first_stale - 0.001)


@pytest.mark.parametrize("data", [b"", b"not json", b'{"owner": 3}', None])
def test_a_foreign_value_is_no_lease(data: bytes | None) -> None:
    assert decode_lease(data) is None
    assert decode_member(data) is None


def test_values_round_trip() -> None:
    import msgspec

    assert LeaseValue("node1", 7) == decode_lease(msgspec.json.encode(LeaseValue("node1", 7)))
    member = MemberInfo("node1", "2026-11-27T00:00:00+00:00", (1, 2), 10, 0)
    assert member == decode_member(msgspec.json.encode(member))
