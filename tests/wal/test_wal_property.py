"""Property: any sequence of appends, crashes and reopens leaves a log that holds every
acknowledged record, in order, with no hole: a prefix-closed superset of what was acknowledged."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.model import Lane
from engine.infra.config import WalConfig
from engine.wal import WALFailedError, open_wal, scan_log
from tests.harness.faultfs import FaultyFiles
from tests.harness.helpers import envelope

CONFIG = WalConfig(segment_bytes_max=64 * 1024, checkpoint_records_interval=7, commit_delay_ms=0)

_op = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 4), st.sampled_from(list(Lane)), st.integers(0, 5000)),
    st.tuples(st.just("crash"), st.integers(0, 3000), st.just(Lane.BATCH), st.just(0)),
    st.tuples(st.just("reopen"), st.just(0), st.just(Lane.BATCH), st.just(0)),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(_op, min_size=1, max_size=20))
def test_appends_crashes_and_reopens(ops: list[tuple[str, int, Lane, int]]) -> None:
    """After every reopen: all acknowledged ids, in order, and only attempted ones beyond them."""
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(_history, Path(tmp), ops)


async def _history(directory: Path, ops: list[tuple[str, int, Lane, int]]) -> None:
    files = FaultyFiles()
    acked: list[str] = []
    attempted: set[str] = set()
    counter = iter(range(10**9))
    wal_cm = open_wal(directory, CONFIG, files=files)
    wal = await wal_cm.__aenter__()
    try:
        for op, count, lane, size in ops:
            if op == "append":
                batch = [envelope(next(counter), lane, size=size) for _ in range(count)]
                attempted.update(e.message_id for e in batch)
                await wal.append(batch)
                acked += [e.message_id for e in batch]
                continue
            if op == "crash":
                batch = [envelope(next(counter), lane) for _ in range(2)]
                attempted.update(e.message_id for e in batch)
                files.die_at_sync = True
                with contextlib.suppress(WALFailedError):
                    await wal.append(batch)
            await wal_cm.__aexit__(None, None, None)
            if op == "crash":
                files.power_loss(torn_bytes=count)
            wal_cm = open_wal(directory, CONFIG, files=files)
            wal = await wal_cm.__aenter__()
            ids = [r.message_id for r in wal.read_from(1)]
            _check(ids, acked, attempted)
        ids = [r.message_id for r in wal.read_from(1)]
        _check(ids, acked, attempted)
    finally:
        await wal_cm.__aexit__(None, None, None)
    # The whole chain verifies from genesis, and the log holds exactly what was read.
    result = scan_log(directory, files)
    assert result.tail is None
    assert result.records == result.hashed_records == len(ids)


def _check(ids: list[str], acked: list[str], attempted: set[str]) -> None:
    assert len(ids) == len(set(ids)), "a record twice"
    position = {m: i for i, m in enumerate(ids)}
    for m in acked:
        assert m in position, f"acknowledged {m} lost"
    assert [position[m] for m in acked] == sorted(position[m] for m in acked), "acknowledged order changed"
    assert set(ids) <= attempted, "a record nobody appended"
