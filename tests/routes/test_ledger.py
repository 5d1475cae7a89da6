"""The ledger: settled LSNs as ranges (checked against a plain set), refusals, and its state saved and read back."""

from __future__ import annotations

from pathlib import Path

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.model import Lane
from engine.routes.ledger import Ledger, LedgerState, Refusal
from engine.wal import OSFiles, SmallFile


def _refusal(lsn: int, patient: str = "H|1") -> Refusal:
    return Refusal(lsn, patient, f"hl7:LAB|H|{lsn}", "ORU^R01", Lane.STANDARD, "AR", "unknown patient", "t", 1)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 60), st.integers(0, 5)), max_size=60))
def test_settled_ranges_agree_with_a_set(operations: list[tuple[bool, int, int]]) -> None:
    ledger = Ledger(LedgerState())
    oracle: set[int] = set()
    for settle, lsn, width in operations:
        if settle:
            ledger.settle_range(lsn, lsn + width)
            oracle.update(range(lsn, lsn + width + 1))
        else:
            ledger.unsettle(lsn)
            oracle.discard(lsn)
        for n in range(1, 70):
            assert ledger.is_settled(n) == (n in oracle)
        mark = 0
        while mark + 1 in oracle:
            mark += 1
        assert ledger.mark == mark
    state = ledger.state()
    assert all(a <= b for a, b in state.settled)
    assert all(b + 1 < c for (_, b), (c, _) in zip(state.settled, state.settled[1:], strict=False))


def test_a_new_route_starts_at_the_end_of_the_log() -> None:
    assert Ledger.starting_at(1234).mark == 1234
    assert Ledger.starting_at(0).mark == 0


def test_a_refusal_is_settled_and_kept_until_an_operator_takes_it() -> None:
    ledger = Ledger(LedgerState())
    ledger.settle_range(1, 4)
    ledger.refuse(_refusal(5))
    assert ledger.mark == 5
    taken = ledger.take_refusal(5)
    assert taken is not None
    assert ledger.take_refusal(5) is None
    ledger.unsettle(5)
    assert ledger.mark == 4


def test_the_state_survives_a_save_and_a_read(tmp_path: Path) -> None:
    ledger = Ledger(LedgerState())
    ledger.settle_range(1, 10)
    ledger.settle_range(12, 20)
    ledger.refuse(_refusal(11))
    ledger.set_paused(True)
    store = SmallFile(tmp_path, "state", OSFiles(), LedgerState)
    store.write(ledger.state())
    assert not ledger.dirty
    again = Ledger(msgspec.convert(store.read(), LedgerState))
    assert again.mark == 20
    assert again.paused
    assert list(again.refused) == [11]
