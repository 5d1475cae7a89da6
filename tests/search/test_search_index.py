"""The search index answers as `SearchQuery.matches` says, and follows the log (a rewound log: made again)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.model import Lane
from engine.infra.config import SearchConfig
from engine.search import MessageRow, Outcome, SearchFollower, SearchIndex, SearchQuery, catch_up_files
from engine.search.rows import micros
from engine.wal import open_wal
from tests.harness.helpers import SMALL, envelope

_APPS = ["LAB", "ADT", "RX", "LAB^X"]
_TYPES = ["ORU^R01", "ORU^R30", "ADT^A01", "ADT^A08", "DFT^P03", "Bundle", ""]
_TIMES = [f"2026-12-0{d}T{h:02d}:00:00.000000+00:00" for d in (1, 2, 3) for h in (0, 9, 23)]


@st.composite
def _rows(draw: st.DrawFn) -> list[MessageRow]:
    """Logged rows in LSN order; message ids drawn from a few, so some control ids are reused."""
    count = draw(st.integers(min_value=0, max_value=40))
    rows = []
    for lsn in range(1, count + 1):
        app, fac, ctrl = draw(st.sampled_from(_APPS)), draw(st.sampled_from(["H1", "H2"])), draw(st.integers(1, 6))
        rows.append(
            MessageRow(
                lsn,
                _TIMES[min(lsn // 5, len(_TIMES) - 1)],
                draw(st.sampled_from([lane.value for lane in Lane])),
                "hl7v2",
                draw(st.sampled_from(_TYPES)),
                f"{app.split('^')[0]}^{fac}",
                str(ctrl),
                "test",
                "rule",
                Outcome.ACCEPTED,
                f"hl7:{app}|{fac}|{ctrl}",
            )
        )
    return rows


_QUERIES = st.builds(
    SearchQuery,
    control_id=st.none() | st.sampled_from(["1", "2", "7"]),
    sender=st.none() | st.sampled_from(["LAB^H1", "LAB", "ADT^H2", "RX", "^"]),
    message_type=st.none() | st.sampled_from([*_TYPES, "ADT^*", "ORU^*", "X^*"]),
    since=st.none() | st.sampled_from(_TIMES),
    until=st.none() | st.sampled_from(_TIMES),
    lane=st.none() | st.sampled_from([lane.value for lane in Lane]),
    outcomes=st.frozensets(st.sampled_from([Outcome.ACCEPTED, Outcome.REUSED])),
    from_lsn=st.integers(1, 30),
)


def _with_reuse(rows: list[MessageRow]) -> list[MessageRow]:
    """What the index should say of each row: `reused` when an earlier row had its message id."""
    seen: set[str] = set()
    out = []
    for row in rows:
        out.append(msgspec.structs.replace(row, outcome=Outcome.REUSED if row.message_id in seen else row.outcome))
        seen.add(row.message_id)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_rows(), query=_QUERIES, split=st.integers(0, 40))
def test_the_index_finds_what_the_query_means(tmp_path_factory: pytest.TempPathFactory, rows, query, split) -> None:  # type: ignore[no-untyped-def]
    """Whatever the rows and the query, the SQL finds exactly the rows `matches` accepts, in log order."""
    index = SearchIndex(tmp_path_factory.mktemp("search") / "search.sqlite")
    try:
        index.add(rows[:split])  # in two slices, as a follower adds them
        index.add(rows[split:])
        expected = [r for r in _with_reuse(rows) if query.matches(r)]
        assert index.search(query, limit=1000) == expected
        assert index.search(query, limit=2) == expected[:2]
        assert index.senders() == _senders(rows)
    finally:
        index.close()


def _senders(rows: list[MessageRow]) -> list[tuple[str, int, int]]:
    """Each sender's last time (microseconds) and count, as the index should keep them."""
    out: dict[str, tuple[int, int]] = {}
    for row in rows:
        last, count = out.get(row.sender, (0, 0))
        out[row.sender] = (max(last, micros(row.at)), count + 1)
    return [(sender, last, count) for sender, (last, count) in sorted(out.items())]


def test_a_row_added_twice_is_kept_once_and_the_tip_never_goes_back(tmp_path: Path) -> None:
    """Two writers at once (a CLI beside the node) may add the same slice: one row, the later tip."""
    index = SearchIndex(tmp_path / "search.sqlite")
    row = MessageRow(
        1, _TIMES[0], "batch", "hl7v2", "DFT^P03", "PAS^H1", "9", "s", "r", Outcome.ACCEPTED, "hl7:PAS|H1|9"
    )
    later = msgspec.structs.replace(row, lsn=2, message_id="hl7:PAS|H1|10", control_id="10")
    index.add([row, later])
    index.add([row])
    assert [r.lsn for r in index.search(SearchQuery(), limit=10)] == [1, 2]
    tip = index.tip()
    assert tip is not None
    assert tip.lsn == 2
    assert index.senders() == [("PAS^H1", micros(_TIMES[0]), 2)]  # the row added twice is counted once
    index.close()


def test_an_index_made_before_it_kept_senders_counts_them_once_when_opened(tmp_path: Path) -> None:
    index = SearchIndex(tmp_path / "search.sqlite")
    rows = [
        MessageRow(n, _TIMES[n], "batch", "hl7v2", "DFT^P03", "PAS^H1", str(n), "s", "r", Outcome.ACCEPTED, f"m{n}")
        for n in (1, 2)
    ]
    index.add(rows)
    index.close()
    with sqlite3.connect(tmp_path / "search.sqlite") as db:  # as an older release left it
        db.execute("DELETE FROM senders")
    index = SearchIndex(tmp_path / "search.sqlite")
    assert index.senders() == [("PAS^H1", micros(_TIMES[2]), 2)]
    index.reset()
    assert index.senders() == []
    index.close()


def _log_of(directory: Path, count: int, first: int = 0) -> None:
    async def write() -> None:
        async with open_wal(directory, SMALL) as wal:
            for i in range(first, first + count):
                await wal.append([envelope(i, Lane.BATCH if i % 3 else Lane.CRITICAL)])

    anyio.run(write)


def test_files_catch_up_in_slices_and_a_replaced_log_makes_the_index_again(tmp_path: Path) -> None:
    """Indexed in slices over several segments; then the log is replaced: the old rows go, the new are found."""
    _log_of(tmp_path / "wal", 300)
    index = SearchIndex(tmp_path / "search.sqlite")
    assert catch_up_files(index, tmp_path / "wal", count_max=7) == 300
    assert len(list((tmp_path / "wal").glob("*.seg"))) > 1
    assert catch_up_files(index, tmp_path / "wal") == 0
    found = index.search(SearchQuery(control_id="42"), limit=10)
    assert [(r.lsn, r.sender, r.message_type, r.lane) for r in found] == [(43, "APP^FAC", "ORU^R01", "critical")]
    # A restore of another log (or one rewound by a power loss): the index's last record is not there.
    for segment in (tmp_path / "wal").iterdir():
        segment.unlink()
    _log_of(tmp_path / "wal", 10, first=1000)
    assert catch_up_files(index, tmp_path / "wal") == 10
    assert index.search(SearchQuery(control_id="42"), limit=10) == []
    assert [r.control_id for r in index.search(SearchQuery(lane="critical"), limit=10)] == ["1002", "1005", "1008"]
    index.close()


@pytest.mark.anyio
async def test_the_follower_gives_way_to_a_busy_node_and_a_search_catches_up_the_rest(tmp_path: Path) -> None:
    """Idle, slices until the index holds the log; busy, none; the stop does not wait; a search indexes the rest."""
    path = tmp_path / "search.sqlite"
    looked = anyio.Event()
    answers = iter([False, True])  # idle for the first slice, then messages in flight

    def busy() -> bool:
        now = next(answers, True)
        if now:
            looked.set()  # the look gives way here: it is over
        return now

    async with open_wal(tmp_path / "wal", SMALL) as wal:
        await wal.append([envelope(i) for i in range(12)])
        follower = SearchFollower(path, lambda: wal, SearchConfig(interval_s=3600, slice_records=5), busy)
        async with anyio.create_task_group() as tg:
            await tg.start(follower.run)
            await looked.wait()
            assert follower.indexed_to == 5
            tg.cancel_scope.cancel()
    index = SearchIndex(path)
    assert [r.lsn for r in index.search(SearchQuery(), limit=100)] == list(range(1, 6))
    assert catch_up_files(index, tmp_path / "wal") == 7
    assert [r.lsn for r in index.search(SearchQuery(), limit=100)] == list(range(1, 13))
    index.close()
