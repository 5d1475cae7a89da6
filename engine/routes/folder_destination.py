"""A folder as a destination: one file per message, written atomically, named so a redelivery replaces it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import final

import anyio

from engine.routes.outcome import Attempt, Verdict
from engine.routes.payload import Payload
from engine.routes.selection import Candidate
from engine.wal import OSFiles, write_atomic

__all__ = ["FolderDestination"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@final
class FolderDestination:
    """Writes `LSN-TYPE.hl7` (or `.json`) into a folder: temp file, fsync, rename, fsync the folder.

    The name is the record's LSN, so a message delivered twice (after a
    crash) replaces its own file: a reader of the folder never sees two.
    A reader picks up only finished files: temp files end in `.tmp`.
    """

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._files = OSFiles()

    async def send(self, candidate: Candidate, payload: Payload) -> Attempt:
        """Write the file. A full or failing disk is retried; nothing here refuses a message for good."""
        try:
            await anyio.to_thread.run_sync(self._write, self.file_name(candidate, fhir=payload.fhir), payload.body)
        except OSError as exc:
            return Attempt(Verdict.RETRY, "write", exc.strerror or type(exc).__name__)
        return Attempt(Verdict.DELIVERED, "written")

    async def close(self) -> None:
        return None  # each write opens and closes its own file

    @staticmethod
    def file_name(candidate: Candidate, *, fhir: bool) -> str:
        """`000000000042-ORU_R01.hl7` (`.json` for FHIR): sorted by name is log order."""
        kind = _UNSAFE.sub("_", candidate.message_type)[:40] or "message"
        suffix = "json" if fhir else "hl7"
        return f"{candidate.lsn:012d}-{kind}.{suffix}"

    def _write(self, name: str, payload: bytes) -> None:
        os.makedirs(self._folder, exist_ok=True)
        write_atomic(self._files, self._folder / name, payload)
