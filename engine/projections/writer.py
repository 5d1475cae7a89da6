"""Writing a batch's changes into PostgreSQL: one transaction, positions included.

Append-only rows go in with COPY. Patches are COPY'd into a session's
staging table, then merged by one set-based statement per table and set of
columns (`INSERT ... SELECT ... ON CONFLICT`, or `UPDATE ... FROM`): a few
round trips per batch, never one per row. The projections' positions are read `FOR UPDATE` first and
must be what the runner expects: a rebuild that reset one meanwhile, or a
second runner, makes the batch roll back whole (`PositionMovedError`), so a row is
never applied twice. A lost connection mid-batch rolls back whole too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, final

import msgspec

from engine.core.errors import VigilError
from engine.projections.tables import Changes, Issue, Key, TableChanges, TableSpec

if TYPE_CHECKING:
    from engine.projections.database import Connection

__all__ = ["PositionMovedError", "Step", "plan", "write_changes", "write_unordered"]


class PositionMovedError(VigilError):
    """A projection's stored position is not the one the batch was built from (a rebuild, another runner)."""


@final
class Step(msgspec.Struct, frozen=True):
    """Rows to COPY into a table, then (for patches) the statement that moves them from staging into place."""

    table: str
    columns: tuple[str, ...]
    rows: list[tuple[object, ...]]
    staged: str | None = None  # for patches: the statements run after the COPY (merge, then empty the stage)


def plan(changes: Changes) -> Iterator[Step]:
    """The steps of a batch, one at a time (pure; a caller may yield to its event loop between them)."""
    for table in changes.tables.values():
        spec = table.spec
        if table.rows:
            yield Step(spec.name, (*spec.key, *spec.columns), table.rows)
        for (columns, create), patches in _grouped(table).items():
            merge = _upsert_sql(spec, columns) if create else _update_sql(spec, columns)
            rows = [(*key, *(values[c] for c in columns)) for key, values in patches]
            empty = f"DELETE FROM {_stage(spec)}"  # noqa: S608 -- a name from the specs
            yield Step(_stage(spec), (*spec.key, *columns), rows, f"{merge}; {empty}")


def _grouped(table: TableChanges) -> dict[tuple[tuple[str, ...], bool], list[tuple[Key, dict[str, object]]]]:
    """Patches grouped by the columns they set and whether they may create their row."""
    groups: dict[tuple[tuple[str, ...], bool], list[tuple[Key, dict[str, object]]]] = {}
    for key, values in table.patches.items():
        columns = tuple(values)  # one handler's patches share an order: few groups, no sorting
        groups.setdefault((columns, key in table.creates), []).append((key, values))
    return groups


_STAGE = "vigil_stage_"


def _stage(spec: TableSpec) -> str:
    return f"{_STAGE}{spec.name}"


def _target(stage: str) -> str:
    return stage.removeprefix(_STAGE)


async def write_changes(
    conn: Connection,
    steps: list[Step],
    issues: list[Issue],
    *,
    expected: Mapping[str, int],
    new: Mapping[str, int],
    schema: str,
) -> None:
    """Apply one batch and move the positions, all or nothing."""
    async with conn.transaction():
        rows = await conn.fetch(
            "SELECT name, lsn FROM projection_positions WHERE name = ANY($1::text[]) FOR UPDATE", list(expected)
        )
        stored = {r["name"]: r["lsn"] for r in rows}
        if stored != dict(expected):
            raise PositionMovedError(f"stored positions {stored} are not the expected {dict(expected)}")
        await _apply(conn, steps, schema)
        await _note_issues(conn, issues)
        await conn.execute(
            "UPDATE projection_positions p SET lsn = v.lsn, updated_at = now() "
            "FROM unnest($1::text[], $2::bigint[]) AS v(name, lsn) WHERE p.name = v.name",
            list(new),
            list(new.values()),
        )


async def write_unordered(conn: Connection, changes: Changes, schema: str) -> None:
    """Apply changes ahead of the ordered cursor (guarded tables only), without moving positions."""
    for table in changes.tables.values():
        if table and not table.spec.guards:
            raise ValueError(f"{table.spec.name} is not guarded: it can only be written in log order")
    async with conn.transaction():
        await _apply(conn, list(plan(changes)), schema)


async def _apply(conn: Connection, steps: list[Step], schema: str) -> None:
    stages = sorted({s.table for s in steps if s.staged is not None})
    if stages:
        # A session's staging tables: no constraints (a patch fills only some columns), emptied after each use.
        made = [f"CREATE TEMP TABLE IF NOT EXISTS {n} AS SELECT * FROM {_target(n)} WITH NO DATA" for n in stages]  # noqa: S608
        await conn.execute("; ".join(made))
    for step in steps:
        await conn.copy_records_to_table(
            step.table, records=step.rows, columns=list(step.columns), schema_name=None if step.staged else schema
        )
        if step.staged is not None:
            await conn.execute(step.staged)


def _upsert_sql(spec: TableSpec, columns: tuple[str, ...]) -> str:
    names = ", ".join([*spec.key, *columns])
    excluded = "EXCLUDED.{}".format
    updates = [f"{c} = {_merged(spec, c, columns, excluded)}" for c in columns if c not in spec.insert_only]
    action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
    # Names come from the table specs in code, never from input: no injection here.
    insert = f"INSERT INTO {spec.name} AS t ({names}) SELECT {names} FROM {_stage(spec)}"  # noqa: S608
    return f"{insert} ON CONFLICT ({', '.join(spec.key)}) {action}"


def _update_sql(spec: TableSpec, columns: tuple[str, ...]) -> str:
    staged = "s.{}".format
    sets = ", ".join(f"{c} = {_merged(spec, c, columns, staged)}" for c in columns if c not in spec.insert_only)
    where = " AND ".join(f"t.{k} = s.{k}" for k in spec.key)
    return f"UPDATE {spec.name} AS t SET {sets} FROM {_stage(spec)} AS s WHERE {where}"  # noqa: S608 -- names from the specs


def _merged(spec: TableSpec, column: str, columns: tuple[str, ...], incoming: Callable[[str], str]) -> str:
    """The SQL value of a column when a patch (its values named by `incoming`) meets the stored row."""
    value = incoming(column)
    if column in spec.summed:
        return f"t.{column} + {value}"
    guard = spec.guard_of(column)
    if guard is None:
        return value
    if column == guard.lsn_column:
        return f"{'GREATEST' if guard.newest else 'LEAST'}(t.{column}, {value})"
    assert guard.lsn_column in columns, f"{spec.name}.{column} is patched without its guard {guard.lsn_column}"
    wins = ">" if guard.newest else "<"
    return f"CASE WHEN {incoming(guard.lsn_column)} {wins} t.{guard.lsn_column} THEN {value} ELSE t.{column} END"


async def _note_issues(conn: Connection, issues: list[Issue]) -> None:
    if issues:
        await conn.executemany(
            "INSERT INTO projection_issues (projection, lsn, seq, field, raw, reason) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            [(i.projection, i.lsn, i.seq, i.field, i.raw, i.reason) for i in issues],
        )
