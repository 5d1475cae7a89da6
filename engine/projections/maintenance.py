"""Operating the read side: reset a projection for a rebuild, read positions and issue counts.

A rebuild empties a projection's tables and sets its position to 0 in one
transaction, holding the position row's lock, so a runner writing a batch
meanwhile either committed before (and is then emptied) or finds the position
moved and rolls back (`writer.PositionMovedError`). The runner, a node's or
the CLI's own, then applies the whole log to it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, final

import msgspec

from engine.infra.config import ProjectionsConfig
from engine.projections.database import connect
from engine.projections.definitions import PROJECTIONS
from engine.projections.schema import migrate, schema_version

if TYPE_CHECKING:
    from engine.projections.database import Connection

__all__ = ["IssueCount", "ReadSideState", "read_state", "rebuild", "reset_projection"]


@final
class IssueCount(msgspec.Struct, frozen=True):
    projection: str
    field: str
    reason: str
    count: int


@final
class ReadSideState(msgspec.Struct, frozen=True):
    """The database's view: schema version, each projection's position, the issues counted."""

    schema_version: int
    positions: dict[str, int]
    issues: list[IssueCount]


async def reset_projection(conn: Connection, name: str) -> None:
    """Empty one projection and set its position to 0 (the caller's runner then replays the log into it)."""
    projection = PROJECTIONS.get(name)
    if projection is None:
        raise ValueError(f"no projection named {name} (there are: {', '.join(PROJECTIONS)})")
    async with conn.transaction():
        await conn.execute("SELECT lsn FROM projection_positions WHERE name = $1 FOR UPDATE", name)
        # Table names come from the projection definitions in code, never from input.
        await conn.execute(f"TRUNCATE {', '.join(projection.tables)}")
        await conn.execute("DELETE FROM projection_issues WHERE projection = $1", name)
        await conn.execute(
            "UPDATE projection_positions SET lsn = 0, updated_at = now(), rebuilt_at = now() WHERE name = $1", name
        )


async def rebuild(dsn: str, config: ProjectionsConfig, name: str, base: Path | None = None) -> None:
    """Connect, make sure the schema is current, and reset one projection."""
    conn = await connect(dsn, config, base or Path())
    try:
        await migrate(conn)
        await reset_projection(conn, name)
    finally:
        await conn.close()


async def read_state(conn: Connection) -> ReadSideState:
    version = await schema_version(conn)
    if version == 0:
        return ReadSideState(0, {}, [])
    positions = {r["name"]: int(r["lsn"]) for r in await conn.fetch("SELECT name, lsn FROM projection_positions")}
    rows = await conn.fetch(
        "SELECT projection, field, reason, count(*) AS n FROM projection_issues "
        "GROUP BY projection, field, reason ORDER BY projection, field, reason"
    )
    issues = [IssueCount(r["projection"], r["field"], r["reason"], int(r["n"])) for r in rows]
    return ReadSideState(version, positions, issues)
