"""The open critical-results worklist, read from the read side: one query for the CLI and the console."""

from __future__ import annotations

from typing import Any

import asyncpg

__all__ = ["critical_worklist"]

_QUERY = (
    "SELECT patient, result_key, code, code_text, value, units, abnormal_flags, status, opened_lsn, "
    "opened_at, effective_at, ack_lsn > last_critical_lsn AS acknowledged, acknowledged_by, acknowledged_at "
    "FROM critical_worklist WHERE $1 OR ack_lsn < last_critical_lsn ORDER BY opened_lsn, patient, result_key"
)


async def critical_worklist(
    conn: asyncpg.Connection[asyncpg.Record], *, acknowledged_too: bool
) -> list[dict[str, Any]]:
    """Critical results waiting for acknowledgement (and, if asked, those acknowledged), oldest first."""
    return [dict(r) for r in await conn.fetch(_QUERY, acknowledged_too)]
