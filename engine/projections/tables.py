"""How a batch of log records becomes rows: table specs and the changes of one batch.

Pure (no I/O). A batch's changes to a table are either append-only rows (one
per event: result versions, administrations, charges) or *patches*: for each
row key, the columns the batch sets, merged in log order, so a patient whose
demographics changed ten times in a batch is written once. A patch that may
create its row is an upsert (missing columns take the table's defaults, as
the record fold starts from an empty view); one that may not (a cancellation
of a medication the patient never had) is an update.

Guards make a table safe to write out of log order: a guarded column only
takes a value whose guard LSN is newer (or, for "first wins" guards, older)
than the stored one. The critical worklist is guarded, because the critical
fast path writes it ahead of the ordered cursor.
"""

from __future__ import annotations

import typing
from typing import Literal, final

import msgspec

__all__ = ["Changes", "Guard", "Issue", "Key", "TableChanges", "TableSpec"]

Key = tuple[str, ...]
PgType = Literal["text", "text[]", "bigint", "int", "numeric", "boolean", "timestamptz"]
_PG_TYPES = frozenset(typing.get_args(PgType))


@final
class Guard(msgspec.Struct, frozen=True):
    """`columns` follow the row whose `lsn_column` wins: the newest (`newest=True`) or the oldest."""

    lsn_column: str
    columns: tuple[str, ...]
    newest: bool = True


@final
class TableSpec(msgspec.Struct, frozen=True):
    """One read-model table: its key, its columns and their types, how updates combine."""

    name: str
    key: tuple[str, ...]
    columns: dict[str, str]  # every column but the key's (key columns are text) and its PgType
    append_only: bool = False
    insert_only: tuple[str, ...] = ()  # set when the row is made, never updated
    summed: tuple[str, ...] = ()  # counters: an update adds
    guards: tuple[Guard, ...] = ()

    def __post_init__(self) -> None:
        wrong = {c: t for c, t in self.columns.items() if t not in _PG_TYPES}
        if wrong:
            raise ValueError(f"{self.name}: columns of unknown types {wrong}")

    def guard_of(self, column: str) -> Guard | None:
        for guard in self.guards:
            if column == guard.lsn_column or column in guard.columns:
                return guard
        return None


@final
class Issue(msgspec.Struct, frozen=True):
    """A value a projection could not take as it is: the row keeps the raw value, the issue is counted."""

    projection: str
    lsn: int
    seq: int
    field: str
    raw: str
    reason: str


class TableChanges:
    """What one batch does to one table."""

    __slots__ = ("creates", "patches", "rows", "spec")

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.patches: dict[Key, dict[str, object]] = {}
        self.creates: set[Key] = set()
        self.rows: list[tuple[object, ...]] = []

    def append(self, row: tuple[object, ...]) -> None:
        """One append-only row, its columns in the spec's order (key first)."""
        self.rows.append(row)

    def patch(self, key: Key, values: dict[str, object], *, create: bool) -> None:
        """Set columns of one row; later patches in the batch win, but for sums and first-wins guards."""
        current = self.patches.get(key)
        if current is None:
            self.patches[key] = dict(values)
        else:
            spec = self.spec
            for column, value in values.items():
                if column not in current:
                    current[column] = value
                elif column in spec.summed:
                    current[column] = _as_int(current[column]) + _as_int(value)
                elif column in spec.insert_only:
                    continue
                else:
                    guard = spec.guard_of(column)
                    if guard is None or guard.newest:
                        current[column] = value
        if create:
            self.creates.add(key)

    def __bool__(self) -> bool:
        return bool(self.patches or self.rows)


def _as_int(value: object) -> int:
    assert isinstance(value, int)
    return value


class Changes:
    """Every table's changes from one batch, and the issues found."""

    __slots__ = ("issues", "tables")

    def __init__(self, specs: dict[str, TableSpec]) -> None:
        self.tables = {name: TableChanges(spec) for name, spec in specs.items()}
        self.issues: list[Issue] = []

    def __getitem__(self, table: str) -> TableChanges:
        return self.tables[table]
