"""The admin request for an online backup: allowed, audited, taken while the node serves."""

from __future__ import annotations

from pathlib import Path
from typing import final

from engine.auth import AuthEndpoint, Permission
from engine.backup import BackupError, take_backup
from engine.infra.admin_socket import AdminError, Handler
from engine.wal import WriteAheadLog

__all__ = ["BackupRequests"]


@final
class BackupRequests:
    def __init__(self, auth: AuthEndpoint, data_dir: Path, wal: WriteAheadLog, node: str) -> None:
        self._auth = auth
        self._data_dir = data_dir
        self._wal = wal
        self._node = node

    def handlers(self) -> dict[str, Handler]:
        return {"backup": self._backup}

    async def _backup(self, request: dict[str, object]) -> object:
        """`dest` is a path on the node's host, absolute: the node writes there, not the asker."""
        dest = request.get("dest")
        if not isinstance(dest, str) or not Path(dest).is_absolute():
            raise AdminError("a backup needs dest, an absolute path on the node's host")
        access = await self._auth.authorize(request, Permission.DATA_BACKUP, action="backup")
        try:
            manifest = await take_backup(self._data_dir, self._wal, Path(dest), node=self._node)
        except BackupError as exc:
            await self._auth.acted(access, "backup", f"to {dest}: failed")
            raise AdminError(str(exc)) from None
        await self._auth.acted(access, "backup", f"to {dest}: through LSN {manifest.last_lsn}")
        return manifest.summary(dest)
