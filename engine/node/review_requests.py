"""What a clinician and a privacy officer ask a running node beside a record: the worklist, and who looked.

- `worklist`: the open critical results (`worklist.read`), from the read side
  (PostgreSQL): each patient shown is audited before the answer leaves.
- `record_accesses`: every access to one patient's record and every refusal,
  from the log itself (`audit.read`, audited as a look at that patient).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, final

import anyio
import msgspec

from engine.auth import AuthEndpoint, Permission
from engine.core.model import RecordAccessed
from engine.infra.admin_socket import AdminError, Handler
from engine.infra.config import Config
from engine.projections import CONNECTION_ERRORS, connect, critical_worklist, dsn_of
from engine.retention import ArchiveError, ArchiveFolder, archived
from engine.wal import WriteAheadLog

__all__ = ["ReviewRequests"]


@final
class ReviewRequests:
    def __init__(self, config: Config, config_dir: Path, wal: WriteAheadLog, auth: AuthEndpoint) -> None:
        self._config = config
        self._config_dir = config_dir
        self._wal = wal
        self._auth = auth

    def handlers(self) -> dict[str, Handler]:
        return {"worklist": self._worklist, "record_accesses": self._accesses}

    async def _worklist(self, request: dict[str, object]) -> object:
        dsn = dsn_of(self._config.projections)
        if dsn is None:
            raise AdminError("the worklist is read from the read side: none is configured (projections.dsn)")
        access = await self._auth.authorize(request, Permission.WORKLIST_READ, action="worklist")
        try:
            conn = await connect(dsn, self._config.projections, self._config_dir)
            try:
                items = await critical_worklist(conn, acknowledged_too=request.get("all") is True)
            finally:
                await conn.close()
        except CONNECTION_ERRORS as exc:
            raise AdminError(f"the read side cannot be reached now: {type(exc).__name__}") from None
        await self._auth.audit(self._auth.service.accessed(access, "worklist", [i["patient"] for i in items]))
        return [{k: _plain(v) for k, v in item.items()} for item in items]

    async def _accesses(self, request: dict[str, object]) -> object:
        patient = request.get("patient")
        if not isinstance(patient, str) or not patient:
            raise AdminError("the request needs patient (authority|identifier)")
        await self._auth.authorize(request, Permission.AUDIT_READ, patient=patient, action="audit_read")

        archive = (
            ArchiveFolder(self._config.retention.folder(self._wal.directory.parent))
            if self._config.retention.enabled
            else None
        )

        def read() -> list[dict[str, object]]:
            # The trail outlives the log's retention: what was archived first, then what the log keeps.
            before = archived(archive, patient=patient) if archive is not None else iter(())
            return [
                {"lsn": record.lsn, **msgspec.to_builtins(event)}
                for record in itertools.chain(before, self._wal.read_patient(patient))
                for event in record.envelope.events
                if isinstance(event, RecordAccessed)
            ]

        try:
            return await anyio.to_thread.run_sync(read)
        except ArchiveError as exc:
            raise AdminError(f"the archive cannot be read: {exc}") from None


def _plain(value: Any) -> Any:
    """A database value as JSON can carry it (times as ISO 8601)."""
    return value.isoformat() if hasattr(value, "isoformat") else value
