"""The read side against a real PostgreSQL: equal to the actors, exactly once, through outages and bad data."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ProjectionsConfig
from engine.decode import Decoder
from engine.feedgen import generate_feed
from engine.projections import ProjectionRunner
from engine.wal import WriteAheadLog, open_wal
from tests.read_side import CRITICAL, actual_tables, differences, expected_tables


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # asyncpg is an asyncio library


def _runner(wal: WriteAheadLog, dsn: str, schema: str, **settings: object) -> ProjectionRunner:
    config = ProjectionsConfig(schema=schema, **settings)  # type: ignore[arg-type]
    return ProjectionRunner(wal, config, dsn, base=Path("."), critical_flags=sorted(CRITICAL))


async def _fill(wal: WriteAheadLog, count: int, seed: int = 7, patients: int = 25) -> None:
    decoder = Decoder()
    envelopes = [
        decoder.hl7(raw, received_at="t", source="s") for raw in generate_feed(count, seed=seed, patients=patients)
    ]
    for start in range(0, len(envelopes), 64):
        await wal.append(envelopes[start : start + 64])


@pytest.mark.anyio
async def test_a_generated_feed_projects_to_what_the_actors_report(tmp_path: Path, pg_dsn: str, pg_schema: str) -> None:
    async with open_wal(tmp_path / "wal") as wal:
        await _fill(wal, 1500)
        await _runner(wal, pg_dsn, pg_schema, batch_records_max=97).catch_up()
        expected = expected_tables(wal.read_from(1))
    actual = await actual_tables(pg_dsn, pg_schema)
    assert not differences(expected, actual)
    assert all(expected[k] for k in ("results", "worklist", "charges", "encounters", "medications"))
