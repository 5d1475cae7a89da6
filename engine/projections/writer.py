"""Writing a batch's changes into PostgreSQL: one transaction, positions included.

Append-only rows go in with COPY; patches with one multi-row statement per
table and set of columns (`executemany`, pipelined by asyncpg), not a round
trip per row. The projections' positions are read `FOR UPDATE` first and
must be what the runner expects: a rebuild that reset one meanwhile, or a
second runner, makes the batch roll back whole (`PositionMovedError`), so a row is
never applied twice. A lost connection mid-batch rolls back whole too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from engine.projections.tables import Changes, Issue, Key, TableChanges, TableSpec

if TYPE_CHECKING:
    from engine.projections.database import Connection

__all__ = ["PositionMovedError", "write_changes", "write_unordered"]


class PositionMovedError(Exception):
    """A projection's stored position is not the one the batch was built from (a rebuild, another runner)."""


async def write_changes(
    conn: Connection,
    changes: Changes,
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
        await _apply(conn, changes.tables.values(), schema)
        await _note_issues(conn, changes.issues)
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
        await _apply(conn, changes.tables.values(), schema)


async def _apply(conn: Connection, tables: Iterable[TableChanges], schema: str) -> None:
    for table in tables:
        spec = table.spec
        if table.rows:
            await conn.copy_records_to_table(
                spec.name, records=table.rows, columns=[*spec.key, *spec.columns], schema_name=schema
            )
        for (columns, create), patches in _grouped(table).items():
            sql = _upsert_sql(spec, columns) if create else _update_sql(spec, columns)
            await conn.executemany(sql, [(*key, *(values[c] for c in columns)) for key, values in patches])


def _grouped(table: TableChanges) -> dict[tuple[tuple[str, ...], bool], list[tuple[Key, dict[str, object]]]]:
    """Patches grouped by the columns they set and whether they may create their row."""
    groups: dict[tuple[tuple[str, ...], bool], list[tuple[Key, dict[str, object]]]] = {}
    for key, values in table.patches.items():
        columns = tuple(sorted(values))
        groups.setdefault((columns, key in table.creates), []).append((key, values))
    return groups


def _upsert_sql(spec: TableSpec, columns: tuple[str, ...]) -> str:
    names = [*spec.key, *columns]
    params = ", ".join(f"${i}::{_type(spec, n)}" for i, n in enumerate(names, 1))
    excluded = "EXCLUDED.{}".format
    updates = [f"{c} = {_merged(spec, c, columns, excluded)}" for c in columns if c not in spec.insert_only]
    action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
    # Names come from the table specs in code, never from input: no injection here.
    insert = f"INSERT INTO {spec.name} AS t ({', '.join(names)}) VALUES ({params})"  # noqa: S608
    return f"{insert} ON CONFLICT ({', '.join(spec.key)}) {action}"


def _update_sql(spec: TableSpec, columns: tuple[str, ...]) -> str:
    first = len(spec.key) + 1
    number = {c: first + i for i, c in enumerate(columns)}

    def param(name: str) -> str:
        return f"${number[name]}::{_type(spec, name)}"

    sets = ", ".join(f"{c} = {_merged(spec, c, columns, param)}" for c in columns if c not in spec.insert_only)
    where = " AND ".join(f"t.{k} = ${i}" for i, k in enumerate(spec.key, 1))
    return f"UPDATE {spec.name} AS t SET {sets} WHERE {where}"  # noqa: S608 -- names from the specs


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


def _type(spec: TableSpec, column: str) -> str:
    return "text" if column in spec.key else spec.columns[column]


async def _note_issues(conn: Connection, issues: list[Issue]) -> None:
    if issues:
        await conn.executemany(
            "INSERT INTO projection_issues (projection, lsn, seq, field, raw, reason) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            [(i.projection, i.lsn, i.seq, i.field, i.raw, i.reason) for i in issues],
        )
