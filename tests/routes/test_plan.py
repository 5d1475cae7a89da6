"""The delivery plan: one patient's messages in log order, critical patients first, batch never starved."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.model import Kind, Lane
from engine.routes.plan import DeliveryPlan, Pending
from engine.routes.selection import Candidate

_LANES = (Lane.CRITICAL, Lane.STANDARD, Lane.BATCH)


def _candidate(lsn: int, patient: str, lane: Lane = Lane.BATCH) -> Candidate:
    return Candidate(lsn, patient, lane, Kind.HL7V2, "ORU^R01", f"m{lsn}", b"MSH|x")


def _take(plan: DeliveryPlan, now: float = 0.0) -> Pending:
    pending = plan.take(now)
    assert pending is not None
    return pending


def test_a_critical_message_goes_ahead_of_every_other_patients_backlog() -> None:
    plan = DeliveryPlan()
    for lsn in range(1, 1001):
        plan.add(_candidate(lsn, f"P{lsn % 50}"), 0.0)
    plan.add(_candidate(1001, "STAT", Lane.CRITICAL), 0.0)
    assert _take(plan).candidate.lsn == 1001


def test_a_critical_message_waits_only_for_its_own_patients_earlier_messages() -> None:
    """Priority inheritance: the patient's billing goes first, at critical priority, ahead of others' backlog."""
    plan = DeliveryPlan()
    for lsn in range(1, 501):
        plan.add(_candidate(lsn, f"P{lsn % 20}"), 0.0)
    plan.add(_candidate(501, "P7", Lane.CRITICAL), 0.0)  # P7 has 25 billing messages before it
    order = []
    for _ in range(26):
        pending = _take(plan)
        order.append(pending.candidate.lsn)
        plan.done(pending)
    p7 = [lsn for lsn in range(1, 501) if lsn % 20 == 7]
    assert order == [*p7, 501]


def test_a_fifo_plan_keeps_log_order_across_patients() -> None:
    plan = DeliveryPlan(fifo=True)
    lanes = [Lane.BATCH, Lane.STANDARD, Lane.CRITICAL]
    for lsn in range(1, 61):
        plan.add(_candidate(lsn, f"P{lsn % 6}", lanes[lsn % 3]), 0.0)
    order = []
    while (pending := plan.take(0.0)) is not None:
        order.append(pending.candidate.lsn)
        plan.done(pending)
    assert order == list(range(1, 61))


def test_batch_gets_a_turn_while_standard_traffic_keeps_coming() -> None:
    plan = DeliveryPlan(batch_every=8)
    for lsn in range(1, 101):
        plan.add(_candidate(lsn, f"B{lsn}", Lane.BATCH), 0.0)
    lsn = 100
    lanes = []
    for _ in range(90):
        lsn += 1
        plan.add(_candidate(lsn, f"S{lsn}", Lane.STANDARD), 0.0)
        pending = _take(plan)
        lanes.append(pending.candidate.lane)
        plan.done(pending)
    assert lanes.count(Lane.BATCH) == 10  # one turn in nine


def test_a_held_patient_waits_and_the_others_flow() -> None:
    plan = DeliveryPlan()
    plan.add(_candidate(1, "A"), 0.0)
    plan.add(_candidate(2, "A"), 0.0)
    plan.add(_candidate(3, "B"), 0.0)
    first = _take(plan)
    assert first.candidate.lsn == 1
    plan.refuse(first, hold=True)
    second = _take(plan)
    assert second.candidate.lsn == 3
    plan.done(second)
    assert plan.take(0.0) is None
    plan.release("A")
    assert _take(plan).candidate.lsn == 2


def test_an_operator_retry_goes_first_for_its_patient() -> None:
    plan = DeliveryPlan()
    plan.add(_candidate(5, "A"), 0.0)
    plan.add(_candidate(6, "A"), 0.0)
    refused = _take(plan)
    plan.refuse(refused, hold=True)
    plan.put_first(refused.candidate, 1.0)
    order = []
    while (pending := plan.take(2.0)) is not None:
        order.append(pending.candidate.lsn)
        plan.done(pending)
    assert order == [5, 6]
    assert plan.size == 0


def test_a_retry_waits_for_its_time_and_keeps_its_place() -> None:
    plan = DeliveryPlan()
    plan.add(_candidate(1, "A", Lane.CRITICAL), 0.0)
    plan.add(_candidate(2, "A", Lane.CRITICAL), 0.0)
    pending = _take(plan)
    plan.retry(pending, due=5.0)
    assert plan.take(4.9) is None
    assert plan.next_due() == 5.0
    again = _take(plan, 5.0)
    assert again is pending
    assert again.attempts == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.sampled_from(_LANES)), min_size=1, max_size=80),
    st.integers(1, 4),
    st.integers(0, 2**32),
    st.booleans(),
)
def test_every_message_leaves_once_and_each_patients_in_log_order(
    messages: list[tuple[int, Lane]], senders: int, seed: int, fifo: bool
) -> None:
    """Random interleavings of senders, answers (delivered, retry, refused) and arrivals keep the rules."""
    rng = random.Random(seed)
    plan = DeliveryPlan(fifo=fifo)
    arrivals = [(lsn, f"P{p}", lane) for lsn, (p, lane) in enumerate(messages, start=1)]
    in_flight: list[Pending] = []
    settled: dict[str, list[int]] = {}
    now = 0.0
    while arrivals or in_flight or plan.size:
        now += 1.0
        if arrivals and rng.random() < 0.5:
            lsn, patient, lane = arrivals.pop(0)
            plan.add(_candidate(lsn, patient, lane), now)
        if len(in_flight) < senders and (pending := plan.take(now)) is not None:
            assert all(p.candidate.patient != pending.candidate.patient for p in in_flight)
            in_flight.append(pending)
        if in_flight and rng.random() < 0.6:
            pending = in_flight.pop(rng.randrange(len(in_flight)))
            roll = rng.random()
            if roll < 0.15:
                plan.retry(pending, now + rng.choice((0.0, 2.0)))
            else:
                (plan.refuse(pending, hold=False) if roll < 0.25 else plan.done(pending))
                settled.setdefault(pending.candidate.patient, []).append(pending.candidate.lsn)
        assert now < 10_000, "the plan stopped handing out messages"
    assert sorted(lsn for lsns in settled.values() for lsn in lsns) == list(range(1, len(messages) + 1))
    for lsns in settled.values():
        assert lsns == sorted(lsns)
